//go:build !linux

package mediarelay

import "net"

// directWriter is Linux-only: elsewhere every frame goes through the
// connection's writer goroutine.
type directWriter struct{}

// newDirectWriter returns the writer that writes nothing.
func newDirectWriter(net.Conn) directWriter { return directWriter{} }

// write writes nothing: the frame is queued.
func (*directWriter) write([]byte) int { return 0 }
