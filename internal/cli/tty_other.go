//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd

package cli

// isTerminal: without a known ioctl, assume no terminal (no prompts, no colour).
func isTerminal(uintptr) bool { return false }
