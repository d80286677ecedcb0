package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the first wrapped in rawTCP.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	raw := newRawTCP(c)
	if _, ok := raw.(*rawTCP); !ok {
		t.Fatalf("newRawTCP(%T) did not wrap a TCP connection", c)
	}
	t.Cleanup(func() { raw.Close(); peer.Close() })
	return raw, peer
}

// TestRawTCPRoundTrip: a write far larger than the socket buffers goes out whole (the writer
// waits for the reader, then resumes after a partial write), and reads see it all in order.
func TestRawTCPRoundTrip(t *testing.T) {
	raw, peer := tcpPair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	errc := make(chan error, 1)
	go func() {
		n, err := raw.Write(big)
		if err == nil && n != len(big) {
			err = errors.New("short write without an error")
		}
		errc <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the peer read other bytes than were written")
	}

	// The other way round, through a small buffer, as msgReader reads.
	go func() { _, err := peer.Write(big[:100000]); errc <- err }()
	buf := make([]byte, 256)
	var back []byte
	for len(back) < 100000 {
		n, err := raw.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(back), err)
		}
		back = append(back, buf[:n]...)
	}
	if err := <-errc; err != nil || !bytes.Equal(back, big[:100000]) {
		t.Fatalf("read back %d bytes, equal %v, peer write error %v", len(back), bytes.Equal(back, big[:100000]), err)
	}
}

// TestRawTCPEndings: the errors callers rely on keep their meaning — EOF when the peer
// closes, net.ErrClosed after our own Close, os.ErrDeadlineExceeded from a deadline, and a
// write to a reset peer is an error, not a signal.
func TestRawTCPEndings(t *testing.T) {
	raw, peer := tcpPair(t)
	if err := raw.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if err := raw.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if _, err := raw.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
	var werr error
	for i := 0; i < 100 && werr == nil; i++ { // the first writes may still be accepted locally
		_, werr = raw.Write([]byte("after close"))
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("write to a closed peer: %v, want EPIPE or ECONNRESET", werr)
	}
	raw.Close()
	if _, err := raw.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}
