//go:build linux

package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// parseSchedstat returns the first field of a /proc/.../schedstat file:
// nanoseconds spent on a CPU.
func parseSchedstat(b []byte) (uint64, error) {
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, errors.New("loadgen: empty schedstat")
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("loadgen: schedstat %q: %w", f[0], err)
	}
	return v, nil
}

// ProcessCPU returns the nanoseconds process pid's threads have spent on a
// CPU: the sum of /proc/PID/task/*/schedstat's first fields (the
// process-level /proc/PID/schedstat covers its main thread only). Threads
// that already exited are not counted.
func ProcessCPU(pid int) (uint64, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("loadgen: cpu time of %d: %w", pid, err)
	}
	var sum uint64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		v, err := parseSchedstat(b)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// Memory is a process's resident memory, from /proc/PID/status.
type Memory struct {
	// RSSKiB is VmRSS, all resident memory.
	RSSKiB uint64 `json:"rss_kib"`
	// AnonKiB is RssAnon, resident anonymous memory (heap, stacks).
	AnonKiB uint64 `json:"rss_anon_kib"`
}

// parseStatus reads VmRSS and RssAnon from a /proc/PID/status file.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	var found int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "VmRSS":
			dst = &m.RSSKiB
		case "RssAnon":
			dst = &m.AnonKiB
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("loadgen: status %s: unexpected %q", key, val)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("loadgen: status %s: %w", key, err)
		}
		*dst = v
		found++
	}
	if found < 2 {
		return m, errors.New("loadgen: status has no VmRSS or RssAnon")
	}
	return m, nil
}

// ProcessMemory returns process pid's resident memory.
func ProcessMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return Memory{}, fmt.Errorf("loadgen: memory of %d: %w", pid, err)
	}
	return parseStatus(b)
}

// UDPCounters are the kernel's UDP counters (the "Udp:" lines of
// /proc/net/snmp), for the whole network namespace.
type UDPCounters struct {
	InDatagrams  uint64 `json:"in_datagrams"`
	InErrors     uint64 `json:"in_errors"`
	OutDatagrams uint64 `json:"out_datagrams"`
	RcvbufErrors uint64 `json:"rcvbuf_errors"`
	SndbufErrors uint64 `json:"sndbuf_errors"`
}

// Sub returns c - o, field by field.
func (c UDPCounters) Sub(o UDPCounters) UDPCounters {
	return UDPCounters{
		InDatagrams: c.InDatagrams - o.InDatagrams, InErrors: c.InErrors - o.InErrors,
		OutDatagrams: c.OutDatagrams - o.OutDatagrams,
		RcvbufErrors: c.RcvbufErrors - o.RcvbufErrors, SndbufErrors: c.SndbufErrors - o.SndbufErrors,
	}
}

// parseSNMP reads the Udp counters from a /proc/net/snmp file: a "Udp:"
// line of names followed by a "Udp:" line of values.
func parseSNMP(b []byte) (UDPCounters, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Udp:")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		vals := strings.Fields(rest)
		if len(vals) != len(names) {
			return UDPCounters{}, fmt.Errorf("loadgen: snmp: %d Udp names, %d values", len(names), len(vals))
		}
		var c UDPCounters
		var found int
		for i, n := range names {
			var dst *uint64
			switch n {
			case "InDatagrams":
				dst = &c.InDatagrams
			case "InErrors":
				dst = &c.InErrors
			case "OutDatagrams":
				dst = &c.OutDatagrams
			case "RcvbufErrors":
				dst = &c.RcvbufErrors
			case "SndbufErrors":
				dst = &c.SndbufErrors
			default:
				continue
			}
			v, err := strconv.ParseUint(vals[i], 10, 64)
			if err != nil {
				return UDPCounters{}, fmt.Errorf("loadgen: snmp Udp %s: %w", n, err)
			}
			*dst = v
			found++
		}
		if found < 5 {
			return UDPCounters{}, errors.New("loadgen: snmp Udp lacks a counter")
		}
		return c, nil
	}
	return UDPCounters{}, errors.New("loadgen: snmp has no Udp lines")
}

// ReadUDPCounters reads /proc/net/snmp.
func ReadUDPCounters() (UDPCounters, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return UDPCounters{}, fmt.Errorf("loadgen: %w", err)
	}
	return parseSNMP(b)
}

// udpSocket is one line of /proc/net/udp.
type udpSocket struct {
	port  uint16 // local port
	drops uint64 // datagrams dropped on its receive queue, ever
}

// parseProcNetUDP reads /proc/net/udp: the sockets by inode.
func parseProcNetUDP(b []byte) (map[uint64]udpSocket, error) {
	out := map[uint64]udpSocket{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // the header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			return nil, fmt.Errorf("loadgen: /proc/net/udp line %q: too few fields", sc.Text())
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("loadgen: /proc/net/udp local address %q", f[1])
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("loadgen: /proc/net/udp port %q: %w", hexPort, err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("loadgen: /proc/net/udp inode %q: %w", f[9], err)
		}
		drops, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("loadgen: /proc/net/udp drops %q: %w", f[len(f)-1], err)
		}
		out[inode] = udpSocket{port: uint16(port), drops: drops}
	}
	return out, nil
}

// readUDPSockets reads /proc/net/udp.
func readUDPSockets() (map[uint64]udpSocket, error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	return parseProcNetUDP(b)
}

// SocketDrops attributes receive-queue drops (the per-socket counter of
// /proc/net/udp) to the sockets of a run.
type SocketDrops struct {
	// Clients are the generator's client sockets.
	Clients uint64 `json:"clients"`
	// Origin is the echo origin's socket.
	Origin uint64 `json:"origin"`
	// Target is the target's public socket (the relay's or cforward's).
	Target uint64 `json:"target"`
	// Other is every other socket: the target's per-session sockets
	// toward the origin, and unrelated ones.
	Other uint64 `json:"other"`
}

// socketDrops classifies the drops between two snapshots by local port.
func socketDrops(before, after map[uint64]udpSocket, clients map[uint16]bool, origin, target uint16) SocketDrops {
	var d SocketDrops
	for inode, s := range after {
		n := s.drops - before[inode].drops
		if before[inode].drops > s.drops {
			n = s.drops // the inode was reused
		}
		switch {
		case n == 0:
		case clients[s.port]:
			d.Clients += n
		case s.port == origin:
			d.Origin += n
		case s.port == target:
			d.Target += n
		default:
			d.Other += n
		}
	}
	return d
}

// userHZ is the unit of /proc/stat's times (USER_HZ, 100 on every Linux
// architecture Go supports).
const userHZ = 100

// parseProcStat returns the busy time of all CPUs together from a
// /proc/stat file, in nanoseconds: the "cpu" line's fields except idle and
// iowait (guest time is already in user and nice, so it is left out too).
func parseProcStat(b []byte) (uint64, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("loadgen: /proc/stat starts with %q", line)
	}
	var busy uint64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: /proc/stat field %d %q: %w", i+1, v, err)
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy * (1e9 / userHZ), nil
}

// MachineCPU returns the nanoseconds all CPUs together have been busy
// since boot, from /proc/stat: with the processes' own times, what other
// processes took from a measurement.
func MachineCPU() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("loadgen: %w", err)
	}
	return parseProcStat(b)
}
