package main

// Network impairment per call, in user space: what a caller's access network does to its media,
// applied by this process to the RTP packets it sends (the microphone, after packetisation:
// real packets with sequence numbers, so a dropped one is a gap the far end sees) and to the
// packets it receives (the agent's audio, before the reorder buffer, the decoder and the
// segmenter). No root, no tc: each call has its own profile, chosen per run
// (loadgen/networks/*.yaml, validated by loadgen/netprofile.py; the join op carries it).
//
// One direction (a link) is, in the order a packet meets them:
//   - a bottleneck of rate_kbps with a drop-tail queue of queue_ms (packets leave it in order);
//   - Gilbert-Elliott loss: a good and a bad state, per packet good->bad with probability p and
//     bad->good with r, then loss with probability loss_good or loss_bad in the state reached
//     (netem's `loss gemodel p r 1-h 1-k`);
//   - an added one-way delay drawn per packet, independently: a floor of delay_ms - jitter_ms
//     plus an exponential part of mean jitter_ms, so the mean is delay_ms and the standard
//     deviation jitter_ms. Packets delayed independently overtake each other, so reordering
//     follows from jitter as on a real network.
// Every draw comes from a generator seeded by the call (the join op's seed and the direction),
// three draws per packet whatever happens to it, so a call's impairment is reproducible.

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// wireOverhead: bytes a packet carries on the wire beyond its RTP packet: SRTP's 10-byte
// authentication tag, UDP (8) and IPv4 (20) headers. The bottleneck serialises these too.
const wireOverhead = 10 + 8 + 20

// linkParams: one direction of a network profile (loadgen/networks/*.yaml, as the join op sends it).
type linkParams struct {
	P        float64 `json:"p"`         // Gilbert-Elliott: good -> bad, per packet
	R        float64 `json:"r"`         // bad -> good, per packet
	LossBad  float64 `json:"loss_bad"`  // loss probability in the bad state (netem's 1-h)
	LossGood float64 `json:"loss_good"` // loss probability in the good state (netem's 1-k)
	DelayMS  float64 `json:"delay_ms"`  // mean added one-way delay
	JitterMS float64 `json:"jitter_ms"` // its standard deviation (the exponential part's mean)
	RateKbps float64 `json:"rate_kbps"` // bottleneck rate; 0: none
	QueueMS  float64 `json:"queue_ms"`  // the bottleneck's queue limit, as waiting time
}

// netProfile: what the join op's "network" carries.
type netProfile struct {
	Name string     `json:"name"`
	Up   linkParams `json:"up"`   // caller -> server: the microphone's packets
	Down linkParams `json:"down"` // server -> caller: what this call hears
	Seed int64      `json:"seed"`
}

func (l linkParams) impaired() bool {
	return l.P > 0 || l.LossGood > 0 || l.DelayMS > 0 || l.RateKbps > 0
}

func (l linkParams) validate(dir string) error {
	prob := func(name string, v float64) error {
		if math.IsNaN(v) || v < 0 || v > 1 {
			return fmt.Errorf("%s.%s: expected a probability in [0, 1], got %g", dir, name, v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v float64
	}{{"p", l.P}, {"r", l.R}, {"loss_bad", l.LossBad}, {"loss_good", l.LossGood}} {
		if err := prob(f.n, f.v); err != nil {
			return err
		}
	}
	if l.P > 0 && l.R == 0 {
		return fmt.Errorf("%s.r: must be > 0 when p > 0 (the bad state would never end)", dir)
	}
	for _, f := range []struct {
		n string
		v float64
	}{{"delay_ms", l.DelayMS}, {"jitter_ms", l.JitterMS}, {"rate_kbps", l.RateKbps}, {"queue_ms", l.QueueMS}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("%s.%s: expected a number >= 0, got %g", dir, f.n, f.v)
		}
	}
	if l.JitterMS > l.DelayMS {
		return fmt.Errorf("%s.jitter_ms: %g is above delay_ms %g (the delay's floor is delay_ms - jitter_ms)",
			dir, l.JitterMS, l.DelayMS)
	}
	if l.RateKbps > 0 && l.QueueMS <= 0 {
		return fmt.Errorf("%s.queue_ms: must be > 0 with a rate_kbps", dir)
	}
	return nil
}

func (n *netProfile) validate() error {
	if err := n.Up.validate("up"); err != nil {
		return err
	}
	return n.Down.validate("down")
}

// lossRate: the stationary share of packets the model loses.
func (l linkParams) lossRate() float64 {
	if l.P == 0 {
		return l.LossGood
	}
	pb := l.P / (l.P + l.R)
	return pb*l.LossBad + (1-pb)*l.LossGood
}

// meanBurst: the mean length of a run of consecutive losses (losses / runs started): a run
// starts where a packet is lost after one that was not.
func (l linkParams) meanBurst() float64 {
	rate := l.lossRate()
	if rate == 0 {
		return 0
	}
	pb := 0.0
	if l.P > 0 {
		pb = l.P / (l.P + l.R)
	}
	pg := 1 - pb
	kept := func(bad bool) float64 {
		if bad {
			return 1 - l.LossBad
		}
		return 1 - l.LossGood
	}
	lost := func(bad bool) float64 { return 1 - kept(bad) }
	// P(previous kept, this lost), over the previous state and the transition to this one.
	starts := pg*kept(false)*((1-l.P)*lost(false)+l.P*lost(true)) +
		pb*kept(true)*(l.R*lost(false)+(1-l.R)*lost(true))
	if starts == 0 {
		return math.Inf(1)
	}
	return rate / starts
}

// fate: what a link does to one packet.
type fate struct {
	drop  string        // "" (delivered), "loss" (Gilbert-Elliott) or "queue" (bottleneck full)
	delay time.Duration // added: queueing and serialisation, then the one-way delay
}

// link: one impaired direction of one call. Not safe for concurrent use.
type link struct {
	p    linkParams
	rng  *rand.Rand
	bad  bool
	free time.Time // when the bottleneck has sent everything queued
}

func newLink(p linkParams, seed int64, stream uint64) *link {
	return &link{p: p, rng: rand.New(rand.NewPCG(uint64(seed), stream))}
}

// decide: the fate of a packet of wireBytes handed to the link at now.
func (l *link) decide(now time.Time, wireBytes int) fate {
	// Three draws per packet, always, so that one packet's fate never shifts another's.
	uState, uLoss, e := l.rng.Float64(), l.rng.Float64(), l.rng.ExpFloat64()
	var f fate
	if l.p.RateKbps > 0 {
		start := now
		if l.free.After(start) {
			start = l.free
		}
		if start.Sub(now) > time.Duration(l.p.QueueMS*float64(time.Millisecond)) {
			f.drop = "queue"
		} else {
			tx := time.Duration(float64(wireBytes*8) / (l.p.RateKbps * 1000) * float64(time.Second))
			l.free = start.Add(tx)
			f.delay = l.free.Sub(now)
		}
	}
	if l.bad {
		l.bad = uState >= l.p.R
	} else {
		l.bad = uState < l.p.P
	}
	lossP := l.p.LossGood
	if l.bad {
		lossP = l.p.LossBad
	}
	if f.drop == "" && uLoss < lossP {
		f.drop = "loss"
	}
	oneWay := (l.p.DelayMS - l.p.JitterMS) + e*l.p.JitterMS
	f.delay += time.Duration(oneWay * float64(time.Millisecond))
	return f
}

// ---- a delay line: items released at their time, earliest first (FIFO among equal times) ----

type delayed[T any] struct {
	at    time.Time
	order uint64
	item  T
}

type delayHeap[T any] []delayed[T]

func (h delayHeap[T]) Len() int { return len(h) }
func (h delayHeap[T]) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].order < h[j].order
	}
	return h[i].at.Before(h[j].at)
}
func (h delayHeap[T]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap[T]) Push(x any)   { *h = append(*h, x.(delayed[T])) }
func (h *delayHeap[T]) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type delayQueue[T any] struct {
	h     delayHeap[T]
	order uint64
}

func (q *delayQueue[T]) push(at time.Time, item T) {
	q.order++
	heap.Push(&q.h, delayed[T]{at, q.order, item})
}

// next: the earliest release time, if anything waits.
func (q *delayQueue[T]) next() (time.Time, bool) {
	if len(q.h) == 0 {
		return time.Time{}, false
	}
	return q.h[0].at, true
}

// pop: the earliest item if its time has come by now.
func (q *delayQueue[T]) pop(now time.Time) (delayed[T], bool) {
	if len(q.h) == 0 || q.h[0].at.After(now) {
		return delayed[T]{}, false
	}
	return heap.Pop(&q.h).(delayed[T]), true
}

// ---- the send side: the microphone's packets through the uplink ------------------------------

// sendLine writes each packet the link lets through at its release time, from a goroutine of
// its own (the microphone's pacing is never held up by it).
type sendLine struct {
	link  *link
	write func(*rtp.Packet) error
	mu    sync.Mutex
	q     delayQueue[*rtp.Packet]
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newSendLine(l *link, write func(*rtp.Packet) error) *sendLine {
	s := &sendLine{link: l, write: write, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

// submit: the packet's fate; a delivered packet goes out after fate.delay.
func (s *sendLine) submit(now time.Time, p *rtp.Packet) fate {
	s.mu.Lock()
	f := s.link.decide(now, p.MarshalSize()+wireOverhead)
	if f.drop == "" {
		s.q.push(now.Add(f.delay), p)
	}
	s.mu.Unlock()
	if f.drop == "" {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return f
}

func (s *sendLine) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		d, ok := s.q.pop(time.Now())
		at, waiting := s.q.next()
		s.mu.Unlock()
		if ok {
			if s.write(d.item) != nil {
				return
			}
			continue
		}
		wait := time.Hour
		if waiting {
			wait = time.Until(at)
		}
		timer.Reset(wait)
		select {
		case <-s.done:
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// close stops the line; packets still held are never sent (the call is leaving).
func (s *sendLine) close() { s.once.Do(func() { close(s.done) }) }
