//go:build darwin || freebsd || netbsd || openbsd

package cli

import (
	"syscall"
	"unsafe"
)

// isTerminal reports whether fd is a terminal (TIOCGETA succeeds only on one).
func isTerminal(fd uintptr) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGETA, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
