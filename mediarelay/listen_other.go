//go:build !linux

package mediarelay

import "syscall"

const reusePortSupported = false

func reusePortControl(_, _ string, _ syscall.RawConn) error { return nil }
