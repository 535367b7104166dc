// lkmedia: the media side of the rig's callers, many calls in one process.
//
// The Python voice driver (loadgen/driver.py, through loadgen/media.py) runs the conversations
// and their timing rules; this process does what costs CPU per frame: the WebRTC session
// (pion, through the LiveKit Go SDK), the caller's microphone (utterances encoded to Opus once,
// then sent at real-time pace, with encoded silence between them, as a microphone would), and
// the agent's audio (decoded at 16 kHz and run through the speech segmenter, so only onsets
// and offsets cross the pipe). The livekit.rtc Python SDK did the same work at ~7 % of a core
// per caller; see loadgen/README.md for what this costs.
//
// Protocol: JSON lines. stdin carries ops {"op": ..., "id": call id, ...}; stdout carries
// events {"ev": ..., "id": call id, ...}; every time is CLOCK_MONOTONIC seconds (Python's
// time.monotonic()). Credentials come from LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and
// never cross the pipe. End of input hangs up every call and exits.
//
//	lkmedia                         the engine (as loadgen/media.py runs it)
//	lkmedia segment -rate 16000     offline: segments s16le PCM from stdin, one JSON line each
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	monoBase time.Time
	monoSec  float64
)

func init() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	monoBase = time.Now()
	monoSec = float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// mono: t on the CLOCK_MONOTONIC scale (Go's own monotonic clock is the same clock on Linux).
func mono(t time.Time) float64 { return monoSec + t.Sub(monoBase).Seconds() }

type engine struct {
	url, key, secret string
	utterances       *utteranceCache
	out              chan map[string]any
	outMu            sync.RWMutex
	outClosed        bool
	mu               sync.Mutex
	calls            map[string]*call
	wg               sync.WaitGroup
	pacing           pacingStats
}

// emit queues an event for stdout. The SDK's callbacks run in goroutines of its own and can
// fire after a call has left, even after the engine stopped writing: those are dropped.
func (e *engine) emit(m map[string]any) {
	e.outMu.RLock()
	defer e.outMu.RUnlock()
	if !e.outClosed {
		e.out <- m
	}
}

func (e *engine) closeOut() {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	e.outClosed = true
	close(e.out)
}

func (e *engine) writer(done chan<- struct{}) {
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	enc := json.NewEncoder(w)
	for m := range e.out {
		_ = enc.Encode(m)
		if len(e.out) == 0 {
			_ = w.Flush()
		}
	}
	_ = w.Flush()
	close(done)
}

type op struct {
	Op         string  `json:"op"`
	ID         string  `json:"id"`
	Room       string  `json:"room"`
	Identity   string  `json:"identity"`
	AsAgent    bool    `json:"as_agent"`
	NoListen   bool    `json:"no_listen"`
	TimeoutS   float64 `json:"timeout_s"`
	Play       int     `json:"play"`
	Layout     layout  `json:"layout"`
	NotBefore  float64 `json:"not_before"`
	Seq        int     `json:"seq"`
	Topic      string  `json:"topic"`
	Payload    string  `json:"payload"`
	StatsEvery float64 `json:"stats_every"`
	// join only: the call's network impairment (absent: none), a tx/rx event per RTP packet,
	// and listening to every participant's audio (a stand-in agent hearing its caller)
	Network   *netProfile `json:"network"`
	Trace     bool        `json:"trace"`
	ListenAll bool        `json:"listen_all"`
}

func (e *engine) call(id string) *call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[id]
}

func (e *engine) handle(o op) {
	switch o.Op {
	case "join":
		if o.Network != nil {
			if err := o.Network.validate(); err != nil {
				e.emit(map[string]any{"ev": "join_failed", "id": o.ID, "step": "bad_network",
					"error": fmt.Sprintf("network %q: %v", o.Network.Name, err)})
				return
			}
		}
		c := newCall(e, o.ID)
		c.net, c.trace, c.all = o.Network, o.Trace, o.ListenAll
		e.mu.Lock()
		if _, dup := e.calls[o.ID]; dup {
			e.mu.Unlock()
			e.emit(map[string]any{"ev": "join_failed", "id": o.ID, "step": "connect_error", "error": "duplicate call id"})
			return
		}
		e.calls[o.ID] = c
		e.mu.Unlock()
		e.wg.Add(1)
		go func() { defer e.wg.Done(); c.join(o.Room, o.Identity, o.AsAgent, !o.NoListen, secs(o.TimeoutS, 10)) }()
	case "play":
		if c := e.call(o.ID); c != nil {
			u, err := e.utterances.get(o.Layout)
			if err != nil {
				e.emit(map[string]any{"ev": "played", "id": o.ID, "play": o.Play, "error": err.Error()})
				return
			}
			c.mic.enqueue(&play{id: o.Play, u: u, notBefore: o.NotBefore})
		} else {
			e.emit(map[string]any{"ev": "played", "id": o.ID, "play": o.Play, "error": "no such call"})
		}
	case "stop_play":
		if c := e.call(o.ID); c != nil {
			c.mic.stop()
		}
	case "data":
		if c := e.call(o.ID); c != nil {
			go c.publishData(o.Seq, o.Topic, o.Payload)
		} else {
			e.emit(map[string]any{"ev": "data_sent", "id": o.ID, "seq": o.Seq, "error": "no such call"})
		}
	case "leave":
		e.mu.Lock()
		c := e.calls[o.ID]
		delete(e.calls, o.ID)
		e.mu.Unlock()
		if c == nil {
			e.emit(map[string]any{"ev": "left", "id": o.ID, "seconds": 0.0})
			return
		}
		e.wg.Add(1)
		go func() { defer e.wg.Done(); c.leave(secs(o.TimeoutS, 5)) }()
	default:
		fmt.Fprintf(os.Stderr, "lkmedia: unknown op %q\n", o.Op)
	}
}

func secs(v, def float64) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v * float64(time.Second))
}

func (e *engine) stats(every time.Duration, quit <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
		e.mu.Lock()
		n := len(e.calls)
		e.mu.Unlock()
		p50, p99, frames, hist := e.pacing.take()
		e.emit(map[string]any{"ev": "stats", "cpu_s": cpu, "calls": n, "goroutines": runtime.NumGoroutine(),
			"send_jitter_ms_p50": p50, "send_jitter_ms_p99": p99, "frames": frames, "send_jitter_hist": hist,
			"rss_bytes": ru.Maxrss * 1024})
	}
}

func runEngine() int {
	e := &engine{url: os.Getenv("LIVEKIT_URL"), key: os.Getenv("LIVEKIT_API_KEY"),
		secret: os.Getenv("LIVEKIT_API_SECRET"), out: make(chan map[string]any, 8192),
		calls: map[string]*call{}}
	var missing []string
	for name, v := range map[string]string{"LIVEKIT_URL": e.url, "LIVEKIT_API_KEY": e.key, "LIVEKIT_API_SECRET": e.secret} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		fmt.Fprintf(os.Stderr, "lkmedia: %s not set in the environment\n", strings.Join(missing, ", "))
		return 2
	}
	var err error
	if e.utterances, err = newUtteranceCache(); err != nil {
		fmt.Fprintln(os.Stderr, "lkmedia:", err)
		return 2
	}
	silenceLogs()
	done := make(chan struct{})
	go e.writer(done)
	quit := make(chan struct{})
	statsEvery := 2 * time.Second
	e.emit(map[string]any{"ev": "ready", "pid": os.Getpid()})
	started := false
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<16), 1<<20)
	for in.Scan() {
		var o op
		if err := json.Unmarshal(in.Bytes(), &o); err != nil {
			fmt.Fprintf(os.Stderr, "lkmedia: ignoring a malformed op line: %.200q\n", in.Text())
			continue
		}
		if o.Op == "config" {
			if o.StatsEvery > 0 {
				statsEvery = secs(o.StatsEvery, 2)
			}
			continue
		}
		if !started {
			started = true
			go e.stats(statsEvery, quit)
		}
		if o.Op == "quit" {
			break
		}
		e.handle(o)
	}
	// End of input: hang up everything (each call's leave is bounded), then exit.
	e.mu.Lock()
	calls := e.calls
	e.calls = map[string]*call{}
	e.mu.Unlock()
	for _, c := range calls {
		e.wg.Add(1)
		go func(c *call) { defer e.wg.Done(); c.leave(5 * time.Second) }(c)
	}
	e.wg.Wait()
	close(quit)
	e.closeOut()
	<-done
	return 0
}

func main() {
	// LKMEDIA_CPUPROFILE=prefix: a Go CPU profile of the whole run in prefix.<pid> (`go tool
	// pprof`), for the benchmarks' "where does a caller's CPU go".
	if path := os.Getenv("LKMEDIA_CPUPROFILE"); path != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	if len(os.Args) > 1 && os.Args[1] == "segment" {
		os.Exit(runSegment(os.Args[2:]))
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: lkmedia            (ops on stdin, events on stdout)\n       lkmedia segment [-rate 16000] [-frame-ms 20] < pcm.s16le")
		os.Exit(2)
	}
	rc := runEngine()
	pprof.StopCPUProfile()
	os.Exit(rc)
}

// runSegment: the live segmenter over a whole s16le buffer, for tests against loadgen/detect.py.
func runSegment(args []string) int {
	fs := flag.NewFlagSet("segment", flag.ContinueOnError)
	rate := fs.Int("rate", decodeRate, "sample rate of the input")
	frameMS := fs.Int("frame-ms", 20, "frame length fed to the segmenter")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lkmedia segment:", err)
		return 2
	}
	x := make([]int16, len(raw)/2)
	for i := range x {
		x[i] = int16(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
	}
	s := newSegmenter(defaultDetector)
	step := *rate * *frameMS / 1000
	var segs [][2]float64
	var open float64
	collect := func(es []edge) {
		for _, ed := range es {
			if ed.start {
				open = ed.t
			} else {
				segs = append(segs, [2]float64{open, ed.t})
			}
		}
	}
	for i := 0; i < len(x); i += step {
		end := i + step
		if end > len(x) {
			end = len(x)
		}
		collect(s.push(float64(i)/float64(*rate), x[i:end], *rate))
	}
	collect(s.flush())
	if segs == nil {
		segs = [][2]float64{}
	}
	b, _ := json.Marshal(map[string]any{"segments": segs})
	fmt.Println(string(b))
	return 0
}
