package main

// Speech onset/offset detection on the agent's decoded audio: a port of
// loadgen/detect.py's SpeechSegmenter (the reference; tests/test_lkmedia.py checks that both
// find the same segments in the same speech). Energy against a relative threshold, onset
// confirmation, hangover, sample-accurate edges. Received audio is continuous (decoded
// silence when nobody talks), so "the agent started talking" is an energy onset, never a
// packet arrival.

import "math"

const (
	fullScale = 32768.0
	dbFloor   = -100.0
)

type detectorConfig struct {
	marginDB         float64
	minThresholdDBFS float64
	initialFloorDBFS float64
	minSpeechMS      float64
	hangoverMS       float64
	floorWindowS     float64
}

// The defaults of loadgen/detect.py DetectorConfig (chosen there on espeak speech through Opus).
var defaultDetector = detectorConfig{25, -60, -90, 40, 80, 3}

type edge struct {
	start bool
	t     float64
}

type floorPoint struct{ t, db float64 }

type segmenter struct {
	cfg        detectorConfig
	floor      []floorPoint // increasing dB: the window minimum at the front
	started    bool
	firstTime  float64
	prev       []int16
	prevT0     float64
	prevRate   int
	candidate  float64
	hasCand    bool
	start      float64
	speaking   bool
	lastActive float64
	quietS     float64
}

func newSegmenter(cfg detectorConfig) *segmenter { return &segmenter{cfg: cfg} }

func rmsDBFS(x []int16) float64 {
	if len(x) == 0 {
		return dbFloor
	}
	var ss float64
	for _, v := range x {
		f := float64(v)
		ss += f * f
	}
	ms := ss / float64(len(x))
	if ms <= 0 {
		return dbFloor
	}
	return math.Max(dbFloor, 10*math.Log10(ms)-20*math.Log10(fullScale))
}

func (s *segmenter) threshold(now float64) float64 {
	floor := s.cfg.initialFloorDBFS
	if len(s.floor) > 0 {
		floor = s.floor[0].db
	}
	if now-s.firstTime < s.cfg.floorWindowS {
		floor = math.Min(floor, s.cfg.initialFloorDBFS)
	}
	return math.Max(floor+s.cfg.marginDB, s.cfg.minThresholdDBFS)
}

func (s *segmenter) updateFloor(t, db float64) {
	for len(s.floor) > 0 && s.floor[len(s.floor)-1].db >= db {
		s.floor = s.floor[:len(s.floor)-1]
	}
	s.floor = append(s.floor, floorPoint{t, db})
	for s.floor[0].t < t-s.cfg.floorWindowS {
		s.floor = s.floor[1:]
	}
}

func above(x []int16, amp float64) (first, last int) {
	first, last = -1, -1
	for i, v := range x {
		if math.Abs(float64(v)) > amp {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return
}

// push takes the next frame (t0 = the time of its first sample) and returns the edges it found.
func (s *segmenter) push(t0 float64, x []int16, rate int) []edge {
	if !s.started {
		s.started = true
		s.firstTime = t0
	}
	dur := float64(len(x)) / float64(rate)
	db := rmsDBFS(x)
	thr := s.threshold(t0)
	s.updateFloor(t0, db)
	amp := fullScale * math.Pow(10, thr/20)
	prev, prevT0, prevRate := s.prev, s.prevT0, s.prevRate
	s.prev = append(s.prev[:0:0], x...)
	s.prevT0, s.prevRate = t0, rate
	var out []edge

	if db >= thr {
		_, last := above(x, amp)
		lastHere := t0 + dur
		if last >= 0 {
			lastHere = t0 + float64(last+1)/float64(rate)
		}
		if !s.speaking && !s.hasCand {
			s.candidate = firstAbove(prev, prevT0, prevRate, t0, x, rate, amp)
			s.hasCand = true
		}
		s.quietS = 0
		s.lastActive = lastHere
		if s.hasCand && (lastHere-s.candidate)*1000 >= s.cfg.minSpeechMS {
			s.start, s.speaking = s.candidate, true
			s.hasCand = false
			out = append(out, edge{true, s.start})
		}
		return out
	}
	if s.quietS == 0 && (s.speaking || s.hasCand) {
		if _, last := above(x, amp); last >= 0 {
			s.lastActive = t0 + float64(last+1)/float64(rate)
		}
	}
	s.quietS += dur
	if s.quietS*1000 >= s.cfg.hangoverMS {
		if s.speaking {
			out = append(out, edge{false, s.lastActive})
		}
		s.speaking, s.hasCand = false, false
	}
	return out
}

// busy: a segment is open or about to be confirmed (a silence push may close it).
func (s *segmenter) busy() bool { return s.speaking || s.hasCand }

func (s *segmenter) flush() []edge {
	var out []edge
	if s.speaking {
		out = append(out, edge{false, s.lastActive})
	}
	s.speaking, s.hasCand, s.prev = false, false, nil
	return out
}

func firstAbove(prev []int16, prevT0 float64, prevRate int, t0 float64, x []int16, rate int, amp float64) float64 {
	// Speech can begin at the end of the previous (quiet by RMS) frame: look there first.
	if len(prev) > 0 && prevRate == rate &&
		math.Abs(prevT0+float64(len(prev))/float64(rate)-t0) < 1e-3 {
		if rs, ok := runStartAtEnd(prev, amp, rate); ok {
			return prevT0 + float64(rs)/float64(rate)
		}
	}
	if first, _ := above(x, amp); first >= 0 {
		return t0 + float64(first)/float64(rate)
	}
	return t0
}

// runStartAtEnd: the first index of the run of above-threshold samples that reaches the end of
// the frame. Zero crossings dip below the threshold every half period, so samples closer than
// 5 ms apart count as one run.
func runStartAtEnd(x []int16, amp float64, rate int) (int, bool) {
	maxStep := int(0.005 * float64(rate))
	if maxStep < 1 {
		maxStep = 1
	}
	last := -1
	for i := len(x) - 1; i >= 0; i-- {
		if math.Abs(float64(x[i])) > amp {
			last = i
			break
		}
	}
	if last < 0 || len(x)-1-last > maxStep {
		return 0, false
	}
	start := last
	for i := last - 1; i >= 0; i-- {
		if math.Abs(float64(x[i])) > amp {
			if start-i > maxStep {
				break
			}
			start = i
		}
	}
	return start, true
}

// streamClock maps RTP stream positions to CLOCK_MONOTONIC seconds: packets arrive late by a
// varying amount (never early), so the least-delayed packet in the last second pins the
// stream's time base (like loadgen/detect.py StreamClock, on RTP timestamps instead of counted
// samples, so a gap in the stream keeps its length).
type streamClock struct {
	offsets []floorPoint // (arrival, arrival - position), increasing offset
}

func (c *streamClock) at(arrival, position float64) float64 {
	c.observe(arrival, position)
	return c.base() + position
}

// observe: a packet at stream `position` arrived at `arrival`.
func (c *streamClock) observe(arrival, position float64) {
	off := arrival - position
	for len(c.offsets) > 0 && c.offsets[len(c.offsets)-1].db >= off {
		c.offsets = c.offsets[:len(c.offsets)-1]
	}
	c.offsets = append(c.offsets, floorPoint{arrival, off})
	for c.offsets[0].t < arrival-1.0 {
		c.offsets = c.offsets[1:]
	}
}

// base: CLOCK_MONOTONIC of stream position 0 (after at least one observe).
func (c *streamClock) base() float64 { return c.offsets[0].db }
