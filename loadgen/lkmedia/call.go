package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

const frameDur = 20 * time.Millisecond

// silenceLogs: the SDK logs every ICE and signalling step; a hundred calls would flood the
// driver's stderr. Errors still reach it.
func silenceLogs() {
	if l, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: "error"}); err == nil {
		lksdk.SetLogger(l)
	}
}

type call struct {
	e       *engine
	id      string
	net     *netProfile // nil: no impairment (the "perfect" network)
	trace   bool        // emit a tx/rx event per RTP packet (tests, diagnosis)
	all     bool        // listen to every participant's audio, not only agents'
	mic     *microphone
	mu      sync.Mutex
	room    *lksdk.Room
	track   *lksdk.LocalTrack
	leaving bool
	joined  chan struct{} // closed when join() returns, whatever happened
	readers sync.WaitGroup
}

func newCall(e *engine, id string) *call {
	c := &call{e: e, id: id, joined: make(chan struct{})}
	c.mic = &microphone{c: c}
	return c
}

func (c *call) emit(ev string, kv ...any) {
	m := map[string]any{"ev": ev, "id": c.id}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	c.e.emit(m)
}

func (c *call) isLeaving() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaving
}

func participantInfo(p *lksdk.RemoteParticipant) map[string]any {
	return map[string]any{"identity": p.Identity(), "agent": p.Kind() == lksdk.ParticipantAgent}
}

func (c *call) callbacks() *lksdk.RoomCallback {
	cb := lksdk.NewRoomCallback()
	cb.OnParticipantConnected = func(p *lksdk.RemoteParticipant) {
		c.emit("participant", "t", mono(time.Now()), "participant", participantInfo(p))
	}
	cb.OnParticipantDisconnected = func(p *lksdk.RemoteParticipant) {
		c.emit("participant_left", "t", mono(time.Now()), "identity", p.Identity())
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		if !c.isLeaving() {
			c.emit("disconnected", "t", mono(time.Now()), "reason", string(reason))
		}
	}
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, p *lksdk.RemoteParticipant) {
		if track.Kind() != webrtc.RTPCodecTypeAudio || (p.Kind() != lksdk.ParticipantAgent && !c.all) {
			return // the caller listens to the agent only
		}
		c.emit("track", "t", mono(time.Now()), "participant", participantInfo(p))
		c.readers.Add(1)
		go func() { defer c.readers.Done(); c.listen(track, p.Identity()) }()
	}
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		if u, ok := data.(*lksdk.UserDataPacket); ok {
			c.emit("data", "t", mono(time.Now()), "topic", u.Topic, "payload", string(u.Payload),
				"from", params.SenderIdentity)
		}
	}
	return cb
}

// join connects, publishes the microphone and starts it (encoded silence until a play).
// asAgent joins as an agent-kind participant (the benchmark's stand-in agent); listen=false
// subscribes to nothing.
func (c *call) join(roomName, identity string, asAgent, listen bool, timeout time.Duration) {
	defer close(c.joined)
	t0 := time.Now()
	at := auth.NewAccessToken(c.e.key, c.e.secret).SetIdentity(identity).SetValidFor(24 * time.Hour)
	if asAgent {
		at.SetKind(livekit.ParticipantInfo_AGENT)
	}
	grant := &auth.VideoGrant{RoomJoin: true, Room: roomName}
	grant.SetCanPublish(true)
	grant.SetCanSubscribe(true)
	grant.SetCanPublishData(true)
	token, err := at.SetVideoGrant(grant).ToJWT()
	if err != nil {
		c.emit("join_failed", "step", "connect_error", "error", err.Error())
		return
	}
	room := lksdk.NewRoom(c.callbacks())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = room.JoinWithContextAndToken(ctx, c.e.url, token, lksdk.WithAutoSubscribe(listen),
		lksdk.WithConnectTimeout(timeout))
	if err != nil {
		room.Disconnect()
		step := "connect_error"
		if errors.Is(err, context.DeadlineExceeded) || time.Since(t0) >= timeout ||
			strings.Contains(err.Error(), "timeout") || strings.Contains(err.Error(), "deadline") {
			step = "connect_timeout"
		}
		c.emit("join_failed", "step", step, "error", err.Error())
		return
	}
	c.mu.Lock()
	c.room = room
	leaving := c.leaving
	c.mu.Unlock()
	if leaving {
		return // leave() is waiting for us and disconnects
	}
	connectS := time.Since(t0).Seconds()
	track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err == nil {
		_, err = room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
			Name: "caller-mic", Source: livekit.TrackSource_MICROPHONE})
	}
	if err == nil {
		go c.mic.run(track)
	}
	if err != nil {
		c.emit("join_failed", "step", "publish_failed", "error", err.Error())
		return
	}
	c.mu.Lock()
	c.track = track
	c.mu.Unlock()
	var present []map[string]any
	for _, p := range room.GetRemoteParticipants() {
		present = append(present, participantInfo(p))
	}
	sort.Slice(present, func(i, j int) bool { return present[i]["identity"].(string) < present[j]["identity"].(string) })
	c.emit("joined", "connect_s", connectS, "participants", present)
}

func (c *call) publishData(seq int, topic, payload string) {
	<-c.joined
	c.mu.Lock()
	room := c.room
	c.mu.Unlock()
	errText := ""
	if room == nil {
		errText = "not connected"
	} else if err := room.LocalParticipant.PublishDataPacket(
		&lksdk.UserDataPacket{Payload: []byte(payload), Topic: topic},
		lksdk.WithDataPublishReliable(true)); err != nil {
		errText = err.Error()
	}
	c.emit("data_sent", "seq", seq, "error", errText)
}

// leave: stop the microphone, unpublish, disconnect, wait for the listeners; bounded.
func (c *call) leave(timeout time.Duration) {
	t0 := time.Now()
	c.mu.Lock()
	c.leaving = true
	c.mu.Unlock()
	var errs []string
	select {
	case <-c.joined:
	case <-time.After(timeout):
		errs = append(errs, "join still running")
	}
	c.mic.stop()
	c.mic.close()
	c.mu.Lock()
	room, track := c.room, c.track
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		if track != nil {
			_ = track.Close()
		}
		if room != nil {
			room.Disconnect()
		}
		c.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		errs = append(errs, "disconnect timed out")
	}
	c.emit("left", "seconds", time.Since(t0).Seconds(), "errors", errs)
}

// listen decodes the agent's audio and reports speech edges. The agent's track uses DTX: in
// silence it sends a packet every 400 ms, whose RTP timestamp jump says how long the silence
// was, and the silence is fed to the segmenter then (an open segment ends with its true time,
// reported up to 400 ms later). A sender that stops altogether (a muted or dead agent) sends
// no such packet: after 1 s without one, half a second of silence closes an open segment.
// That is never fed by wall-clock time, so a reader starved of CPU cannot cut a segment.
//
// On the way to the decoder: the call's downlink impairment (netem.go), then a reorder buffer
// (packets go to the decoder in sequence order; a missing one is waited for `hold`, then
// concealed by the decoder's PLC, as a client's jitter buffer would). Times come from the
// packets' RTP timestamps and arrival times, never from when they were decoded, so neither the
// impairment's queue nor the buffer's wait moves an edge. Each edge carries three times:
//
//	t      on the stream clock anchored by packet arrivals at this process (the least-delayed
//	       packet of the last second): the agent's audio as if the downlink added nothing;
//	t_net  the same, anchored by when the impaired downlink delivered them: as the caller heard
//	       it (equal to t without impairment);
//	t_pkt  when the packet carrying the edge's sample was delivered, plus the sample's offset
//	       in it, with no anchoring (absent for an edge in concealed or filled-in audio).
func (c *call) listen(track *webrtc.TrackRemote, from string) {
	dec, err := newDecoder()
	if err != nil {
		c.emit("error", "detail", err.Error())
		return
	}
	defer dec.close()
	seg := newSegmenter(defaultDetector)
	var (
		clock, heardClock streamClock
		unwrap            tsUnwrap
		frames            frameRing
		ro                = newReorder()
		held              delayQueue[*rxPacket]
		down              *link
		hold              = reorderHold
	)
	if c.net != nil && c.net.Down.impaired() {
		down = newLink(c.net.Down, c.net.Seed, streamDown)
		if h := time.Duration(4 * c.net.Down.JitterMS * float64(time.Millisecond)); h > hold {
			hold = min(h, maxReorderHold)
		}
	}
	pcm := make([]int16, decodeRate*120/1000)
	zeros := make([]int16, decodeRate*20/1000)
	var (
		nextT      float64 // the stream time just after the last fed sample
		lastPos    float64 // stream position of the last decoded packet
		lastDur    float64 // and its duration
		decoded    bool
		netOff     float64 // heardClock - clock: what the impaired downlink adds, as anchored
		lastPacket = time.Now()
	)
	report := func(es []edge) {
		for _, ed := range es {
			kind := "end"
			if ed.start {
				kind = "start"
			}
			kv := []any{"edge", kind, "t", ed.t, "t_net", ed.t + netOff, "from", from}
			if at, ok := frames.heardAt(ed.t); ok {
				kv = append(kv, "t_pkt", at)
			}
			c.emit("speech", kv...)
		}
	}
	push := func(t0 float64, x []int16, heard float64) {
		frames.add(t0, float64(len(x))/decodeRate, heard)
		report(seg.push(t0, x, decodeRate))
		nextT = t0 + float64(len(x))/decodeRate
	}
	silence := func(from, to float64) {
		for t := from; t+0.02 <= to && seg.busy(); t += 0.02 {
			push(t, zeros, math.NaN())
		}
	}
	decode := func(p *rxPacket) {
		n, err := dec.decode(p.pkt.Payload, pcm)
		if err != nil || n == 0 {
			return
		}
		netOff = heardClock.base() - clock.base()
		t0 := clock.base() + p.pos
		if nextT > 0 {
			if t0 > nextT+0.03 {
				silence(nextT, t0) // a DTX gap
			}
			t0 = math.Max(t0, nextT)
		}
		push(t0, pcm[:n], p.heard)
		decoded, lastPos, lastDur = true, p.pos, float64(n)/decodeRate
	}
	// conceal: k packets before `after` never came; the decoder's PLC fills them in when they
	// were audio (a DTX gap, whose timestamps jump, is filled with silence by decode instead).
	conceal := func(k int, after *rxPacket) {
		if !decoded || k > maxConceal || lastDur <= 0 ||
			math.Abs(after.pos-lastPos-float64(k+1)*lastDur) > 0.002 {
			return
		}
		frame := int(math.Round(lastDur * decodeRate))
		for i := 0; i < k; i++ {
			n, err := dec.decode(nil, pcm[:frame])
			if err != nil || n == 0 {
				return
			}
			push(nextT, pcm[:n], math.NaN())
			lastPos += lastDur
		}
	}
	accept := func(p *rxPacket) {
		heardClock.observe(p.heard, p.pos)
		ro.insert(p, time.Now())
	}
	defer func() { report(seg.flush()) }()
	for {
		deadline := time.Now().Add(250 * time.Millisecond)
		if at, ok := held.next(); ok && at.Before(deadline) {
			deadline = at
		}
		if at, ok := ro.deadline(hold); ok && at.Before(deadline) {
			deadline = at
		}
		_ = track.SetReadDeadline(deadline)
		pkt, _, err := track.ReadRTP()
		now := time.Now()
		if err != nil {
			if c.isLeaving() || !isTimeout(err) {
				return
			}
		} else {
			lastPacket = now
			arrival := mono(now)
			pos := unwrap.pos(pkt.Timestamp)
			clock.observe(arrival, pos)
			p := &rxPacket{pkt: pkt, arrival: arrival, heard: arrival, pos: pos}
			if down == nil {
				accept(p)
				if c.trace {
					c.emit("rx", "from", from, "seq", pkt.SequenceNumber, "ts", pkt.Timestamp, "t", arrival,
						"heard", arrival)
				}
			} else {
				f := down.decide(now, pkt.MarshalSize()+wireOverhead)
				if f.drop == "" {
					p.heard = arrival + f.delay.Seconds()
					held.push(now.Add(f.delay), p)
				}
				if c.trace {
					kv := []any{"from", from, "seq", pkt.SequenceNumber, "ts", pkt.Timestamp, "t", arrival}
					if f.drop == "" {
						kv = append(kv, "heard", p.heard)
					} else {
						kv = append(kv, "drop", f.drop)
					}
					c.emit("rx", kv...)
				}
			}
		}
		for {
			d, ok := held.pop(time.Now())
			if !ok {
				break
			}
			accept(d.item)
		}
		ro.drain(time.Now(), hold, decode, conceal)
		if err != nil && seg.busy() && nextT > 0 && time.Since(lastPacket) > time.Second {
			silence(nextT, nextT+0.5)
		}
	}
}

const (
	// reorderHold: how long a missing packet is waited for once a later one is there (a
	// client's jitter buffer waits about as long); with an impaired downlink, 4 x its jitter.
	reorderHold    = 60 * time.Millisecond
	maxReorderHold = 300 * time.Millisecond
	maxConceal     = 10     // packets: longer gaps are left to the DTX gap's silence
	streamUp       = 0x7570 // the link generators' streams: "up", "dn"
	streamDown     = 0x646e
)

// rxPacket: a received packet on its way to the decoder.
type rxPacket struct {
	pkt     *rtp.Packet
	arrival float64   // CLOCK_MONOTONIC: when it reached this process
	heard   float64   // when the (impaired) downlink delivered it; == arrival without impairment
	pos     float64   // its stream position (s), from its RTP timestamp
	in      time.Time // when it entered the reorder buffer
}

// tsUnwrap: stream positions (seconds at 48 kHz) from RTP timestamps, in any order.
type tsUnwrap struct {
	have   bool
	lastTS uint32
	last   float64
}

func (u *tsUnwrap) pos(ts uint32) float64 {
	if !u.have {
		u.have, u.lastTS = true, ts
		return 0
	}
	p := u.last + float64(int32(ts-u.lastTS))/48000.0
	if p > u.last {
		u.last, u.lastTS = p, ts
	}
	return p
}

// reorder: packets to the decoder in sequence order.
type reorder struct {
	started bool
	next    uint16
	buf     map[uint16]*rxPacket
	late    int // arrived after their turn: dropped, as a jitter buffer drops a late packet
}

func newReorder() *reorder { return &reorder{buf: map[uint16]*rxPacket{}} }

func (r *reorder) insert(p *rxPacket, now time.Time) {
	seq := p.pkt.SequenceNumber
	if !r.started {
		r.started, r.next = true, seq
	}
	if int16(seq-r.next) < 0 {
		r.late++
		return
	}
	if _, dup := r.buf[seq]; !dup {
		p.in = now
		r.buf[seq] = p
	}
}

// deadline: when the wait for a missing packet ends, if one is missing.
func (r *reorder) deadline(hold time.Duration) (time.Time, bool) {
	if len(r.buf) == 0 {
		return time.Time{}, false
	}
	if _, ok := r.buf[r.next]; ok {
		return time.Now(), true
	}
	var oldest time.Time
	for _, p := range r.buf {
		if oldest.IsZero() || p.in.Before(oldest) {
			oldest = p.in
		}
	}
	return oldest.Add(hold), true
}

// drain hands over every packet whose turn it is; a missing one after `hold` is given up
// (conceal says how many, and what comes after them).
func (r *reorder) drain(now time.Time, hold time.Duration, decode func(*rxPacket), conceal func(int, *rxPacket)) {
	for len(r.buf) > 0 {
		if p, ok := r.buf[r.next]; ok {
			delete(r.buf, r.next)
			r.next++
			decode(p)
			continue
		}
		at, _ := r.deadline(hold)
		if now.Before(at) {
			return
		}
		var after *rxPacket
		for _, p := range r.buf {
			if after == nil || uint16(p.pkt.SequenceNumber-r.next) < uint16(after.pkt.SequenceNumber-r.next) {
				after = p
			}
		}
		conceal(int(uint16(after.pkt.SequenceNumber-r.next)), after)
		r.next = after.pkt.SequenceNumber
	}
}

// frameRing: the last frames fed to the segmenter, to find the packet an edge's sample came in.
type frameRing struct {
	f [128]struct{ t0, dur, heard float64 }
	n int
}

func (r *frameRing) add(t0, dur, heard float64) {
	r.f[r.n%len(r.f)] = struct{ t0, dur, heard float64 }{t0, dur, heard}
	r.n++
}

func (r *frameRing) heardAt(t float64) (float64, bool) {
	for i := 1; i <= len(r.f) && i <= r.n; i++ {
		f := r.f[(r.n-i)%len(r.f)]
		if f.t0-1e-6 <= t && t <= f.t0+f.dur+1e-6 {
			if math.IsNaN(f.heard) {
				return 0, false
			}
			return f.heard + (t - f.t0), true
		}
	}
	return 0, false
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// ---- the microphone -----------------------------------------------------------------------

type play struct {
	id         int
	u          *utterance
	notBefore  float64
	next       int // packet index
	speechAt   float64
	startDelay float64 // what the uplink added to the packet of the first speech sample (s)
}

// mark: what the packet just taken from a play carries (its first or last speech sample).
type mark struct {
	p     *play
	start bool
	t     float64 // when the first speech sample goes out
	eou   bool
	eouT  float64 // when the last one does
}

// microphone: every 20 ms, on an absolute schedule, the current
// utterance's next packet. Between utterances it sends what Opus DTX sends in silence (as the
// LiveKit client SDKs do for a microphone): one silence packet every 400 ms, so the stream
// stays alive and the far end conceals the rest; the RTP timestamps follow the wall clock.
type microphone struct {
	c      *call
	mu     sync.Mutex
	queue  []*play
	done   chan struct{}
	closed bool
}

const dtxEvery = 20 // frames: 400 ms

func (m *microphone) enqueue(p *play) {
	m.mu.Lock()
	m.queue = append(m.queue, p)
	m.mu.Unlock()
}

// stop drops the current and queued utterances (a hang-up or a cancelled speak).
func (m *microphone) stop() {
	m.mu.Lock()
	q := m.queue
	m.queue = nil
	m.mu.Unlock()
	for _, p := range q {
		m.c.emit("played", "play", p.id, "cancelled", true)
	}
}

// close ends run(); the call is leaving.
func (m *microphone) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		if m.done != nil {
			close(m.done)
		}
	}
}

func (m *microphone) run(track *lksdk.LocalTrack) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.done = make(chan struct{})
	done := m.done
	m.mu.Unlock()
	// Packetised here, one Opus frame per RTP packet as the SDK's sample writer does, so that
	// the uplink impairment drops and delays real packets: a dropped one leaves a gap in the
	// sequence numbers (the far end sees a loss, not silence).
	write := func(p *rtp.Packet) error { return track.WriteRTP(p, nil) }
	var line *sendLine
	if n := m.c.net; n != nil && n.Up.impaired() {
		line = newSendLine(newLink(n.Up, n.Seed, streamUp), write)
		defer line.close()
	}
	seq := uint16(rand.Uint32())
	ts0 := rand.Uint32()>>2 | 1<<31 // in the upper half of the timestamp space, like the SDK's
	first := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	sinceSent := dtxEvery
	for k := int64(0); ; k++ {
		ideal := first.Add(time.Duration(k) * frameDur)
		timer.Reset(time.Until(ideal))
		select {
		case <-done:
			return
		case <-timer.C:
		}
		now := time.Now()
		m.c.e.pacing.record(now.Sub(ideal))
		data, mk := m.next(now)
		if data == nil {
			if sinceSent++; sinceSent < dtxEvery {
				continue
			}
			data = m.c.e.utterances.silence
		}
		sinceSent = 0
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq,
			Timestamp: ts0 + uint32(k)*frameSamples}, Payload: data}
		seq++
		var f fate
		if line != nil {
			f = line.submit(now, pkt)
		} else {
			_ = write(pkt) // an unbound or reconnecting track drops it, as the SDK's writer does
		}
		if m.c.trace {
			m.c.emit("tx", "seq", pkt.SequenceNumber, "ts", pkt.Timestamp, "t", mono(now),
				"delay", f.delay.Seconds(), "drop", f.drop)
		}
		if mk.start {
			mk.p.speechAt, mk.p.startDelay = mk.t, f.delay.Seconds()
		}
		if mk.eou {
			// eou_delay: what the uplink added to the packet of the last speech sample (a lost
			// one too: its drawn delay), so the caller can time the agent from when the end of
			// the utterance reached it, not from when it left the microphone.
			m.c.emit("played", "play", mk.p.id, "speech_start", mk.p.speechAt, "eou", mk.eouT,
				"start_delay", mk.p.startDelay, "eou_delay", f.delay.Seconds(), "eou_lost", f.drop != "")
		}
	}
}

// next: the packet to send now, or nil in silence, and what it carries.
func (m *microphone) next(now time.Time) ([]byte, mark) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) == 0 || mono(now) < m.queue[0].notBefore {
		return nil, mark{}
	}
	p := m.queue[0]
	i := p.next
	t := mono(now)
	mk := mark{p: p}
	s0, s1 := i*frameSamples, (i+1)*frameSamples
	if s0 <= p.u.speechStart && p.u.speechStart < s1 {
		mk.start, mk.t = true, t+float64(p.u.speechStart-s0)/micRate
	}
	if s0 < p.u.speechEnd && p.u.speechEnd <= s1 {
		// the end of utterance: when its last speech sample goes out
		mk.eou, mk.eouT = true, t+float64(p.u.speechEnd-s0)/micRate
	}
	p.next++
	if p.next >= len(p.u.packets) {
		m.queue = m.queue[1:]
	}
	return p.u.packets[i], mk
}

// ---- frame-send jitter --------------------------------------------------------------------

// Upper bounds (ms) of the cumulative lateness histogram (loadgen/driver.py reports the same).
var pacingBuckets = []float64{0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000}

type pacingStats struct {
	mu      sync.Mutex
	samples []float64
	hist    [17]int64
}

func (p *pacingStats) record(late time.Duration) {
	ms := float64(late) / 1e6
	if ms < 0 {
		ms = 0
	}
	i := sort.SearchFloat64s(pacingBuckets, ms)
	p.mu.Lock()
	p.samples = append(p.samples, ms)
	p.hist[i]++
	p.mu.Unlock()
}

// take: p50 and p99 (ms) since the last take, their count, and the cumulative histogram.
func (p *pacingStats) take() (float64, float64, int, []int64) {
	p.mu.Lock()
	xs := p.samples
	p.samples = nil
	hist := append([]int64(nil), p.hist[:]...)
	p.mu.Unlock()
	if len(xs) == 0 {
		return 0, 0, 0, hist
	}
	sort.Float64s(xs)
	p99 := int(0.99 * float64(len(xs)))
	if p99 >= len(xs) {
		p99 = len(xs) - 1
	}
	return xs[len(xs)/2], xs[p99], len(xs), hist
}
