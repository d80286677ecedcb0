package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawTCP is a TCP connection whose reads and writes are made with raw system calls inside
// Go's poller (syscall.RawConn): the sockets are non-blocking, so a read or write never waits
// in the kernel, and skipping the runtime's syscall bookkeeping spares what it costs here.
// Around every blocking-capable system call Go marks the thread as in a syscall; a loopback
// write, which delivers the data to the receiver inline, often lasts long enough for the
// runtime's monitor to hand the thread's processor to another thread, and getting it back
// costs futex wake-ups and context switches on every message. With the raw calls the proxy
// made about half the context switches per transaction (measured with perf stat at a fixed
// rate, see docs/proxy.md). Waiting for readiness, deadlines and closing stay Go's.
type rawTCP struct {
	*net.TCPConn
	rc syscall.RawConn
	rd rawOp // used by the one goroutine reading
	wr rawOp // used by the one goroutine writing (callers serialise writes)
}

// rawOp is the state of one read or write, kept in the connection so that the callback
// given to the poller is built once and the hot path allocates nothing.
type rawOp struct {
	buf   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// newRawTCP wraps c when it is a TCP connection; anything else is returned as it is.
func newRawTCP(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawTCP{TCPConn: tc, rc: rc}
	r.rd.fn = r.readOnce
	r.wr.fn = r.writeSome
	return r
}

// readOnce is one read(2); false asks the poller to wait until the socket is readable.
func (r *rawTCP) readOnce(fd uintptr) bool {
	for {
		// #nosec G103 -- buf is a live, non-empty Go slice for the duration of the call; the kernel writes at most len(buf) bytes into it
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rd.buf[0])), uintptr(len(r.rd.buf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			r.rd.n = int(n)
		default:
			r.rd.errno = e
		}
		return true
	}
}

func (r *rawTCP) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.rd.buf, r.rd.n, r.rd.errno = b, 0, 0
	err := r.rc.Read(r.rd.fn)
	r.rd.buf = nil
	switch {
	case err != nil:
		return 0, err
	case r.rd.errno != 0:
		return 0, r.opError("read", r.rd.errno)
	case r.rd.n == 0:
		return 0, io.EOF
	}
	return r.rd.n, nil
}

// writeSome writes as much of the pending buffer as the socket takes; false asks the poller
// to wait until it is writable again. MSG_NOSIGNAL: a peer that went away is an EPIPE error,
// not a signal.
func (r *rawTCP) writeSome(fd uintptr) bool {
	for len(r.wr.buf) > 0 {
		// #nosec G103 -- buf is a live, non-empty Go slice for the duration of the call; the kernel only reads len(buf) bytes from it
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&r.wr.buf[0])), uintptr(len(r.wr.buf)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			r.wr.n += int(n)
			r.wr.buf = r.wr.buf[n:]
		default:
			r.wr.errno = e
			return true
		}
	}
	return true
}

func (r *rawTCP) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.wr.buf, r.wr.n, r.wr.errno = b, 0, 0
	err := r.rc.Write(r.wr.fn)
	r.wr.buf = nil
	switch {
	case err != nil:
		return r.wr.n, err
	case r.wr.errno != 0:
		return r.wr.n, r.opError("write", r.wr.errno)
	}
	return r.wr.n, nil
}

func (r *rawTCP) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
