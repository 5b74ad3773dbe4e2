//go:build linux

package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
)

// WriteTable writes results as an aligned table. Rows are compared with the
// latest cforward row of the same session count ("vs cforward": the row's
// CPU per packet over the C forwarder's), and TCP rows also with the latest
// UDP row of the same target and session count ("vs udp"). A target's
// name is followed by "/tcp" over TCP.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sessions\ttarget\tmode\tsent pps\techo pps\tloss %\tRTT p50 µs\tp99 µs\tp99.9 µs\tCPU %\tCPU µs/pkt\tvs cforward\tvs udp\tRSS KiB/sess\tanon KiB/sess\trcvbuf err\tsndbuf err\tdrops cli/orig/tgt/other\ttool CPU %\t")
	base := map[int]*Result{}
	type key struct {
		target   string
		sessions int
	}
	udp := map[key]*Result{}
	for _, r := range results {
		if r.Target == TargetCForward {
			base[r.Sessions] = r
		}
		target := r.Target
		if r.Transport == TransportTCP {
			target += "/" + TransportTCP
		} else {
			udp[key{r.Target, r.Sessions}] = r
		}
		mode := r.Mode
		switch r.Mode {
		case "idle":
		case "paced":
			mode = strconv.FormatFloat(r.Rate, 'f', -1, 64) + "/s"
			if r.Rate >= 10 {
				mode = strconv.FormatFloat(r.Rate, 'f', 0, 64) + "/s"
			}
		default:
			mode = "win " + strconv.Itoa(r.Window)
		}
		cpu, ratio, vsUDP, rss, anon := "-", "-", "-", "-", "-"
		if r.PID > 0 {
			cpu = fmt.Sprintf("%.1f", r.CPUPct)
			rss = fmt.Sprintf("%.1f", r.RSSPerSessionKiB)
			anon = fmt.Sprintf("%.1f", r.AnonPerSessionKiB)
			if b := base[r.Sessions]; b != nil && b.CPUPerPacketUs > 0 {
				ratio = fmt.Sprintf("%.2fx", r.CPUPerPacketUs/b.CPUPerPacketUs)
			}
			if u := udp[key{r.Target, r.Sessions}]; r.Transport == TransportTCP && u != nil && u.CPUPerPacketUs > 0 {
				vsUDP = fmt.Sprintf("%.2fx", r.CPUPerPacketUs/u.CPUPerPacketUs)
			}
		}
		cpp := "-"
		if r.PID > 0 {
			cpp = fmt.Sprintf("%.2f", r.CPUPerPacketUs)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f\t%.0f\t%.3f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d/%d/%d/%d\t%.0f\t\n",
			r.Sessions, target, mode, r.SentPPS, r.PPS, r.LossPct, r.RTTP50us, r.RTTP99us, r.RTTP999us,
			cpu, cpp, ratio, vsUDP, rss, anon, r.UDP.RcvbufErrors, r.UDP.SndbufErrors,
			r.Drops.Clients, r.Drops.Origin, r.Drops.Target, r.Drops.Other, r.ToolCPUPct)
	}
	return tw.Flush()
}

// WriteJSON writes results (of Run, Compare or Setups) to file as
// indented JSON.
func WriteJSON[R any](file string, results []R) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	return nil
}
