package cli

import (
	"fmt"
	"strings"
)

type diffOp struct {
	kind   byte // ' ', '-', '+'
	ai, bi int  // positions in a and b before this op
	text   string
}

// lineDiff is a longest-common-subsequence diff of two line lists (configurations are small).
func lineDiff(a, b []string) []diffOp {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []diffOp
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, diffOp{' ', i, j, a[i]})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] > lcs[i+1][j]):
			ops = append(ops, diffOp{'+', i, j, b[j]})
			j++
		default:
			ops = append(ops, diffOp{'-', i, j, a[i]})
			i++
		}
	}
	return ops
}

// unifiedRange formats a hunk range as difflib does: "3", "3,4" or "2,0".
func unifiedRange(start, length int) string {
	switch length {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, length)
}

// unifiedDiff renders the change from before to after (whole texts) as a unified diff with
// three lines of context; "" when equal.
func unifiedDiff(before, after, fromName, toName string) string {
	split := func(s string) []string {
		s = strings.TrimRight(s, "\n")
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	ops := lineDiff(split(before), split(after))
	const context = 3
	var changes []int
	for k, op := range ops {
		if op.kind != ' ' {
			changes = append(changes, k)
		}
	}
	if len(changes) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", fromName, toName)
	for c := 0; c < len(changes); {
		start := max(0, changes[c]-context)
		end := changes[c] + 1
		// Extend the hunk while the next change is within two contexts.
		for c+1 < len(changes) && changes[c+1]-end <= 2*context {
			c++
			end = changes[c] + 1
		}
		c++
		end = min(len(ops), end+context)
		aLen, bLen := 0, 0
		for _, op := range ops[start:end] {
			if op.kind != '+' {
				aLen++
			}
			if op.kind != '-' {
				bLen++
			}
		}
		fmt.Fprintf(&b, "@@ -%s +%s @@\n", unifiedRange(ops[start].ai, aLen), unifiedRange(ops[start].bi, bLen))
		for _, op := range ops[start:end] {
			b.WriteByte(op.kind)
			b.WriteString(op.text)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// paintDiff colours a unified diff for a terminal.
func paintDiff(d string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(d, "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "---"), strings.HasPrefix(l, "+++"):
			b.WriteString(ansiBold + strings.TrimSuffix(l, "\n") + ansiReset + "\n")
		case strings.HasPrefix(l, "@@"):
			b.WriteString(ansiCyan + strings.TrimSuffix(l, "\n") + ansiReset + "\n")
		case strings.HasPrefix(l, "-"):
			b.WriteString(ansiRed + strings.TrimSuffix(l, "\n") + ansiReset + "\n")
		case strings.HasPrefix(l, "+"):
			b.WriteString(ansiGreen + strings.TrimSuffix(l, "\n") + ansiReset + "\n")
		default:
			b.WriteString(l)
		}
	}
	return b.String()
}
