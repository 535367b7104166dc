package main

// The impairment model (netem.go) and the receive path's reorder buffer, without a network:
// run by tests/test_network_profiles.py (`go test -run 'Netem|Reorder' .`).

import (
	"math"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

const pktBytes = 80 + 12 + wireOverhead // a 32 kbit/s Opus frame in its RTP packet, on the wire

// run: n packets every 20 ms through a link; per packet its fate.
func runLink(p linkParams, seed int64, n int) []fate {
	l := newLink(p, seed, streamUp)
	t0 := time.Unix(1000, 0)
	out := make([]fate, n)
	for i := range out {
		out[i] = l.decide(t0.Add(time.Duration(i)*frameDur), pktBytes)
	}
	return out
}

func lossStats(fs []fate) (rate, burst float64) {
	lost, runs := 0, 0
	for i, f := range fs {
		if f.drop != "" {
			lost++
			if i == 0 || fs[i-1].drop == "" {
				runs++
			}
		}
	}
	if runs == 0 {
		return 0, 0
	}
	return float64(lost) / float64(len(fs)), float64(lost) / float64(runs)
}

func near(t *testing.T, what string, got, want, relTol float64) {
	t.Helper()
	if math.Abs(got-want) > relTol*math.Abs(want) {
		t.Errorf("%s: got %.5g, want %.5g within %.0f %%", what, got, want, relTol*100)
	}
}

func TestNetemLossRateAndBurstsMatchTheModel(t *testing.T) {
	cases := []struct {
		name string
		p    linkParams
	}{
		{"bernoulli", linkParams{LossGood: 0.02}},
		{"gilbert", linkParams{P: 0.0025, R: 0.5, LossBad: 1}},                          // 0.5 %, bursts of 2
		{"gilbert-elliott", linkParams{P: 0.01, R: 0.3, LossBad: 0.7, LossGood: 0.005}}, // lossy 3G-like
		{"long-bursts", linkParams{P: 0.004, R: 0.125, LossBad: 0.9, LossGood: 0.001}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rate, burst := lossStats(runLink(c.p, 7, 400_000))
			near(t, "loss rate", rate, c.p.lossRate(), 0.08)
			near(t, "mean burst", burst, c.p.meanBurst(), 0.08)
		})
	}
	// the closed forms themselves: simple Gilbert (loss only in the bad state): rate p/(p+r),
	// mean burst 1/r
	g := linkParams{P: 0.0025, R: 0.5, LossBad: 1}
	near(t, "gilbert rate formula", g.lossRate(), 0.0025/0.5025, 1e-9)
	near(t, "gilbert burst formula", g.meanBurst(), 2, 1e-9)
	if (linkParams{}).lossRate() != 0 {
		t.Error("no loss parameters, yet a loss rate")
	}
}

func TestNetemDelayMeanJitterAndFloor(t *testing.T) {
	p := linkParams{DelayMS: 35, JitterMS: 10}
	fs := runLink(p, 3, 100_000)
	var sum, sq float64
	minD := math.Inf(1)
	for _, f := range fs {
		ms := float64(f.delay) / 1e6
		sum += ms
		sq += ms * ms
		minD = math.Min(minD, ms)
	}
	mean := sum / float64(len(fs))
	std := math.Sqrt(sq/float64(len(fs)) - mean*mean)
	near(t, "mean delay (ms)", mean, 35, 0.01)
	near(t, "jitter: delay std (ms)", std, 10, 0.03)
	if minD < 25-1e-6 || minD > 25.05 {
		t.Errorf("delay floor: min %.3f ms, want 25 (delay_ms - jitter_ms)", minD)
	}
	// no jitter: every packet exactly delay_ms
	for _, f := range runLink(linkParams{DelayMS: 20}, 3, 100) {
		if f.delay != 20*time.Millisecond {
			t.Fatalf("fixed delay: got %v", f.delay)
		}
	}
}

// order of release: which packets a link delivers out of their sending order.
func reordered(fs []fate) (int, int) {
	type rel struct {
		at time.Duration
		i  int
	}
	var rs []rel
	for i, f := range fs {
		if f.drop == "" {
			rs = append(rs, rel{time.Duration(i)*frameDur + f.delay, i})
		}
	}
	sort.SliceStable(rs, func(a, b int) bool { return rs[a].at < rs[b].at })
	late, maxI := 0, -1
	for _, r := range rs {
		if r.i < maxI {
			late++ // a later packet was released first
		}
		maxI = max(maxI, r.i)
	}
	return late, len(rs)
}

func TestNetemJitterReordersPacketsAndNoJitterDoesNot(t *testing.T) {
	late, n := reordered(runLink(linkParams{DelayMS: 35, JitterMS: 10}, 5, 20_000))
	// exponential jitter of mean 10 ms, packets 20 ms apart: one overtakes the one before it
	// with probability exp(-2)/2 = 6.8 %
	share := float64(late) / float64(n)
	if share < 0.04 || share > 0.10 {
		t.Errorf("reordered share with 10 ms jitter: %.3f, want about 0.068", share)
	}
	if late, _ := reordered(runLink(linkParams{DelayMS: 35}, 5, 20_000)); late != 0 {
		t.Errorf("a fixed delay reordered %d packets", late)
	}
	// the delay line releases in time order, FIFO among equal times
	var q delayQueue[int]
	t0 := time.Unix(0, 0)
	for i, ms := range []int{30, 10, 20, 10} {
		q.push(t0.Add(time.Duration(ms)*time.Millisecond), i)
	}
	var got []int
	for {
		d, ok := q.pop(t0.Add(time.Second))
		if !ok {
			break
		}
		got = append(got, d.item)
	}
	if want := []int{1, 3, 2, 0}; !slices.Equal(got, want) {
		t.Errorf("delay line order %v, want %v", got, want)
	}
}

func TestNetemBandwidthCapPacesAndDropsAtTheQueueLimit(t *testing.T) {
	// 40 kbit/s < the stream's 130 B x 50/s = 52 kbit/s: the queue grows, then drops
	p := linkParams{RateKbps: 40, QueueMS: 200}
	l := newLink(p, 1, streamUp)
	t0 := time.Unix(1000, 0)
	var lastOut time.Time
	delivered, queued := 0, 0
	for i := 0; i < 3000; i++ {
		at := t0.Add(time.Duration(i) * frameDur)
		f := l.decide(at, 100+wireOverhead)
		switch f.drop {
		case "":
			delivered++
			out := at.Add(f.delay)
			if i > 0 && !lastOut.IsZero() && out.Sub(lastOut) < time.Duration(float64(138*8)/40000*float64(time.Second))-time.Microsecond {
				t.Fatalf("packet %d left %v after the previous one: faster than the link", i, out.Sub(lastOut))
			}
			lastOut = out
			if f.delay > 200*time.Millisecond+28*time.Millisecond {
				t.Fatalf("packet %d waited %v: over the 200 ms queue limit", i, f.delay)
			}
		case "queue":
			queued++
		default:
			t.Fatalf("unexpected drop %q", f.drop)
		}
	}
	// throughput delivered = the cap (the whole run is backlogged after the first second)
	span := lastOut.Sub(t0).Seconds()
	near(t, "delivered kbit/s", float64(delivered*138*8)/span/1000, 40, 0.02)
	if queued == 0 {
		t.Error("an overfull bottleneck dropped nothing")
	}
	// under the cap: only the serialisation time (138 B at 1 Mbit/s = 1.1 ms), no queue
	fs := runLink(linkParams{RateKbps: 1000, QueueMS: 100}, 1, 100)
	bits := float64(pktBytes * 8)
	for _, f := range fs {
		if f.drop != "" || f.delay != time.Duration(bits/1e6*float64(time.Second)) {
			t.Fatalf("under the cap: %+v", f)
		}
	}
}

func TestNetemIsDeterministicPerSeed(t *testing.T) {
	p := linkParams{P: 0.01, R: 0.3, LossBad: 0.7, LossGood: 0.005, DelayMS: 80, JitterMS: 25}
	a, b, c := runLink(p, 42, 5000), runLink(p, 42, 5000), runLink(p, 43, 5000)
	same := func(x, y []fate) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed, different fates")
	}
	if same(a, c) {
		t.Error("different seeds, same fates")
	}
	// the two directions of one call draw from different streams
	up, down := newLink(p, 42, streamUp), newLink(p, 42, streamDown)
	t0 := time.Unix(0, 0)
	if up.decide(t0, pktBytes) == down.decide(t0, pktBytes) && up.decide(t0, pktBytes) == down.decide(t0, pktBytes) {
		t.Error("uplink and downlink draw the same numbers")
	}
}

func TestNetemValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		p    linkParams
		want string
	}{
		{linkParams{P: 1.5, R: 0.5}, "up.p: expected a probability in [0, 1], got 1.5"},
		{linkParams{P: 0.1}, "up.r: must be > 0 when p > 0"},
		{linkParams{DelayMS: 10, JitterMS: 20}, "up.jitter_ms: 20 is above delay_ms 10"},
		{linkParams{DelayMS: -1}, "up.delay_ms: expected a number >= 0, got -1"},
		{linkParams{RateKbps: 100}, "up.queue_ms: must be > 0 with a rate_kbps"},
	} {
		err := c.p.validate("up")
		if err == nil || len(err.Error()) < len(c.want) || err.Error()[:len(c.want)] != c.want {
			t.Errorf("%+v: error %v, want %q", c.p, err, c.want)
		}
	}
	if err := (linkParams{P: 0.01, R: 0.3, LossBad: 1, DelayMS: 30, JitterMS: 10, RateKbps: 500, QueueMS: 100}).validate("down"); err != nil {
		t.Error(err)
	}
}

// The send line: real goroutine, real timers; what it writes, in what order.
func TestNetemSendLineDropsAndDelaysRealPackets(t *testing.T) {
	var mu sync.Mutex
	var wrote []uint16
	var at []time.Time
	line := newSendLine(newLink(linkParams{P: 0.05, R: 0.5, LossBad: 1, DelayMS: 30, JitterMS: 10}, 9, streamUp),
		func(p *rtp.Packet) error {
			mu.Lock()
			wrote = append(wrote, p.SequenceNumber)
			at = append(at, time.Now())
			mu.Unlock()
			return nil
		})
	defer line.close()
	sent := map[uint16]time.Time{}
	dropped := map[uint16]bool{}
	want := map[uint16]time.Duration{}
	for i := 0; i < 200; i++ {
		now := time.Now()
		seq := uint16(65500 + i) // wraps
		f := line.submit(now, &rtp.Packet{Header: rtp.Header{SequenceNumber: seq}, Payload: make([]byte, 80)})
		sent[seq] = now
		if f.drop != "" {
			dropped[seq] = true
		} else {
			want[seq] = f.delay
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(wrote) != len(want) || len(dropped) == 0 {
		t.Fatalf("wrote %d packets, %d were to go through; %d dropped", len(wrote), len(want), len(dropped))
	}
	outOfOrder := 0
	for i, seq := range wrote {
		if dropped[seq] {
			t.Fatalf("dropped packet %d was written", seq)
		}
		late := at[i].Sub(sent[seq]) - want[seq]
		if late < 0 || late > 20*time.Millisecond {
			t.Errorf("packet %d written %v off its release time", seq, late)
		}
		if i > 0 && int16(seq-wrote[i-1]) < 0 {
			outOfOrder++
		}
	}
	if outOfOrder == 0 {
		t.Error("10 ms of jitter on packets 2 ms apart reordered nothing")
	}
}

func TestReorderBufferDeliversInSequenceAndConcealsAGap(t *testing.T) {
	r := newReorder()
	t0 := time.Unix(0, 0)
	mk := func(seq uint16) *rxPacket {
		return &rxPacket{pkt: &rtp.Packet{Header: rtp.Header{SequenceNumber: seq}}, pos: float64(seq-65530) * 0.02}
	}
	var got []uint16
	var gaps [][2]int
	decode := func(p *rxPacket) { got = append(got, p.pkt.SequenceNumber) }
	conceal := func(k int, after *rxPacket) { gaps = append(gaps, [2]int{k, int(after.pkt.SequenceNumber)}) }
	hold := 60 * time.Millisecond
	for i, seq := range []uint16{65530, 65532, 65531, 65533, 65535, 1, 0} { // 65534 lost, 1 before 0
		r.insert(mk(seq), t0.Add(time.Duration(i)*time.Millisecond))
		r.drain(t0.Add(time.Duration(i)*time.Millisecond), hold, decode, conceal)
	}
	if want := []uint16{65530, 65531, 65532, 65533}; !slices.Equal(got, want) {
		t.Fatalf("before the hold: %v, want %v", got, want)
	}
	if at, ok := r.deadline(hold); !ok || !at.Equal(t0.Add(4*time.Millisecond+hold)) {
		t.Fatalf("deadline %v %v", at, ok)
	}
	r.drain(t0.Add(100*time.Millisecond), hold, decode, conceal)
	if want := []uint16{65530, 65531, 65532, 65533, 65535, 0, 1}; !slices.Equal(got, want) {
		t.Fatalf("after the hold: %v, want %v", got, want)
	}
	if len(gaps) != 1 || gaps[0] != [2]int{1, 65535} {
		t.Fatalf("concealed %v, want one packet before 65535", gaps)
	}
	r.insert(mk(65534), t0.Add(time.Second)) // too late now
	if r.late != 1 || len(r.buf) != 0 {
		t.Fatalf("a late packet was kept (late %d, buffered %d)", r.late, len(r.buf))
	}
}
