//go:build !linux

// Command rtcedge-load is Linux-only: it measures through /proc and raw
// Linux socket calls.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "rtcedge-load: Linux only")
	os.Exit(1)
}
