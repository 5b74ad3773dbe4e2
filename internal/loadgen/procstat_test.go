//go:build linux

package loadgen

import (
	"os"
	"testing"
)

func TestParseSchedstat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"three fields", "1715426 472434 2\n", 1715426, false},
		{"big", "98765432109876 0 0", 98765432109876, false},
		{"empty", "", 0, true},
		{"garbage", "x 1 2", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSchedstat([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseSchedstat(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	const full = `Name:	mediarelay
Umask:	0022
State:	S (sleeping)
VmPeak:	 1263844 kB
VmRSS:	   23456 kB
RssAnon:	   12000 kB
RssFile:	   11456 kB
RssShmem:	       0 kB
Threads:	9
`
	tests := []struct {
		name    string
		in      string
		want    Memory
		wantErr bool
	}{
		{"full", full, Memory{RSSKiB: 23456, AnonKiB: 12000}, false},
		{"kernel thread has no VmRSS", "Name:\tkthreadd\nState:\tS\n", Memory{}, true},
		{"bad number", "VmRSS:\tlots kB\nRssAnon:\t1 kB\n", Memory{}, true},
		{"bad unit", "VmRSS:\t1 MB\nRssAnon:\t1 kB\n", Memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
				t.Fatalf("parseStatus = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 123
Icmp: InMsgs InErrors
Icmp: 5 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 5022586 8556 2167 5043784 2160 7 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`
	tests := []struct {
		name    string
		in      string
		want    UDPCounters
		wantErr bool
	}{
		{"linux 6", snmp, UDPCounters{InDatagrams: 5022586, InErrors: 2167, OutDatagrams: 5043784, RcvbufErrors: 2160, SndbufErrors: 7}, false},
		{"no udp", "Ip: Forwarding\nIp: 1\n", UDPCounters{}, true},
		{"short values", "Udp: InDatagrams NoPorts\nUdp: 1\n", UDPCounters{}, true},
		{"missing counter", "Udp: InDatagrams NoPorts\nUdp: 1 2\n", UDPCounters{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSNMP([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseSNMP = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProcReadersOnThisProcess(t *testing.T) {
	cpu, err := ProcessCPU(os.Getpid())
	if err != nil || cpu == 0 {
		t.Fatalf("ProcessCPU(self) = %d, %v", cpu, err)
	}
	m, err := ProcessMemory(os.Getpid())
	if err != nil || m.RSSKiB == 0 {
		t.Fatalf("ProcessMemory(self) = %+v, %v", m, err)
	}
	if _, err := ReadUDPCounters(); err != nil {
		t.Fatal(err)
	}
}

func TestParseProcNetUDP(t *testing.T) {
	const header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n"
	const two = header +
		" 1234: 0100007F:B7B9 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 4242 2 ffff8c9b0f1a2000 17          \n" +
		" 5678: 0100007F:1F40 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 ffff8c9b0f1a2400 0           \n"
	tests := []struct {
		name    string
		in      string
		want    map[uint64]udpSocket
		wantErr bool
	}{
		{"two sockets", two, map[uint64]udpSocket{4242: {port: 0xB7B9, drops: 17}, 4343: {port: 8000, drops: 0}}, false},
		{"header only", header, map[uint64]udpSocket{}, false},
		{"truncated line", header + " 1: 0100007F:1F40 00000000:0000 07\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNetUDP([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("inode %d: %+v, want %+v", k, got[k], v)
				}
			}
		})
	}
}

func TestSocketDrops(t *testing.T) {
	before := map[uint64]udpSocket{1: {port: 100, drops: 5}, 2: {port: 200, drops: 0}, 3: {port: 300}}
	after := map[uint64]udpSocket{1: {port: 100, drops: 7}, 2: {port: 200, drops: 3}, 3: {port: 300, drops: 4},
		4: {port: 400, drops: 1}, 5: {port: 101, drops: 2}}
	got := socketDrops(before, after, map[uint16]bool{100: true, 101: true}, 200, 300)
	want := SocketDrops{Clients: 4, Origin: 3, Target: 4, Other: 1}
	if got != want {
		t.Fatalf("socketDrops = %+v, want %+v", got, want)
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"two cpus", "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 2 25 500 10 0 1 1 3 0\n", (100 + 5 + 50 + 1 + 2 + 3) * 1e7, false},
		{"no steal column", "cpu  1 2 3 4 5 6 7\n", 0, true},
		{"not cpu", "intr 1 2 3 4 5 6 7 8 9\n", 0, true},
		{"garbage", "cpu  1 x 3 4 5 6 7 8 9\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseProcStat(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := MachineCPU(); err != nil {
		t.Fatal(err)
	}
}
