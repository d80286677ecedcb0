package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// table is tabular output in patronictl's shapes: table (patronictl's "pretty": an ASCII table
// with an optional title in its top border), json/yaml (a list of objects) and tsv.
type table struct {
	title   string
	columns []string
	right   map[string]bool // right-aligned columns
	rows    [][]any
	// dropEmpty leaves empty cells out of json/yaml objects (patronictl does for list).
	dropEmpty bool
	// paint colours a cell in pretty output (nil: none); it gets the column, the raw value and
	// the text already padded to width.
	paint func(col string, v any, padded string) string
}

// formats the table commands accept.
var tableFormats = []string{"table", "pretty", "json", "yaml", "yml", "tsv"}

func checkFormat(f string, allowed ...string) error {
	for _, a := range allowed {
		if f == a {
			return nil
		}
	}
	return fmt.Errorf("unknown format %q: want one of %s", f, strings.Join(allowed, ", "))
}

func cellText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.RawMessage:
		return string(x)
	}
	return fmt.Sprint(v)
}

func empty(v any) bool { return cellText(v) == "" }

func (t *table) write(w io.Writer, format string) error {
	switch format {
	case "json":
		return t.writeJSON(w)
	case "yaml", "yml":
		return t.writeYAML(w)
	case "tsv":
		t.writeTSV(w)
		return nil
	default:
		t.writePretty(w)
		return nil
	}
}

func (t *table) writeJSON(w io.Writer) error {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, r := range t.rows {
		if i > 0 {
			buf.WriteString(", ")
		}
		buf.WriteByte('{')
		first := true
		for j, c := range t.columns {
			if t.dropEmpty && empty(r[j]) {
				continue
			}
			if !first {
				buf.WriteString(", ")
			}
			first = false
			k, _ := json.Marshal(c)
			v, err := json.Marshal(r[j])
			if err != nil {
				return err
			}
			buf.Write(k)
			buf.WriteString(": ")
			buf.Write(v)
		}
		buf.WriteByte('}')
	}
	buf.WriteString("]\n")
	_, err := w.Write(buf.Bytes())
	return err
}

func (t *table) writeYAML(w io.Writer) error {
	list := []map[string]any{}
	for _, r := range t.rows {
		m := map[string]any{}
		for j, c := range t.columns {
			if t.dropEmpty && empty(r[j]) {
				continue
			}
			v := r[j]
			if raw, ok := v.(json.RawMessage); ok {
				var x any
				if err := json.Unmarshal(raw, &x); err == nil {
					v = x
				}
			}
			m[c] = v
		}
		list = append(list, m)
	}
	b, err := yaml.Marshal(list)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (t *table) writeTSV(w io.Writer) {
	fmt.Fprintln(w, strings.Join(t.columns, "\t"))
	for _, r := range t.rows {
		cells := make([]string, len(r))
		for i, v := range r {
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cellText(v))
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
}

func width(s string) int { return utf8.RuneCountInString(s) }

func (t *table) writePretty(w io.Writer) {
	widths := make([]int, len(t.columns))
	for i, c := range t.columns {
		widths[i] = width(c)
	}
	for _, r := range t.rows {
		for i, v := range r {
			for _, line := range strings.Split(cellText(v), "\n") {
				widths[i] = max(widths[i], width(line))
			}
		}
	}
	rule := func() string {
		var b strings.Builder
		b.WriteByte('+')
		for _, wd := range widths {
			b.WriteString(strings.Repeat("-", wd+2))
			b.WriteByte('+')
		}
		return b.String()
	}
	top := rule()
	if t.title != "" && len(widths) > 0 {
		// The title sits in the top border: "+ Cluster: demo (…) ---+----+"; widen the last
		// column when the title does not fit.
		need := width(t.title) + 2
		if width(top) < need {
			widths[len(widths)-1] += need - width(top)
			top = rule()
		}
		r := []rune(top)
		top = string(r[:1]) + t.title + string(r[1+width(t.title):])
	}
	fmt.Fprintln(w, top)
	line := func(cells []string, raw []any) {
		var b strings.Builder
		b.WriteByte('|')
		for i, c := range cells {
			pad := strings.Repeat(" ", widths[i]-width(c))
			cell := c + pad
			if t.right[t.columns[i]] {
				cell = pad + c
			}
			if raw != nil && t.paint != nil {
				cell = t.paint(t.columns[i], raw[i], cell)
			}
			b.WriteString(" " + cell + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.columns, nil)
	fmt.Fprintln(w, rule())
	for _, r := range t.rows {
		// Multi-line cells (tags in YAML block form) take several table lines.
		lines := make([][]string, len(r))
		n := 1
		for i, v := range r {
			lines[i] = strings.Split(cellText(v), "\n")
			n = max(n, len(lines[i]))
		}
		for k := 0; k < n; k++ {
			cells := make([]string, len(r))
			for i := range r {
				if k < len(lines[i]) {
					cells[i] = lines[i][k]
				}
			}
			if k == 0 {
				line(cells, r)
			} else {
				line(cells, nil)
			}
		}
	}
	fmt.Fprintln(w, rule())
}

// ANSI colours for terminals.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
)

func paintText(on bool, code, s string) string {
	if !on {
		return s
	}
	return code + s + ansiReset
}
