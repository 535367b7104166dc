package main

import (
	"context"
	"errors"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
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
		if track.Kind() != webrtc.RTPCodecTypeAudio || p.Kind() != lksdk.ParticipantAgent {
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
func (c *call) listen(track *webrtc.TrackRemote, from string) {
	dec, err := newDecoder()
	if err != nil {
		c.emit("error", "detail", err.Error())
		return
	}
	defer dec.close()
	seg := newSegmenter(defaultDetector)
	var clock streamClock
	pcm := make([]int16, decodeRate*120/1000)
	zeros := make([]int16, decodeRate*20/1000)
	var (
		haveTS     bool
		lastTS     uint32
		position   float64 // seconds of stream, from RTP timestamps (48 kHz clock)
		nextT      float64 // the stream time just after the last fed sample
		lastPacket = time.Now()
	)
	report := func(es []edge) {
		for _, ed := range es {
			kind := "end"
			if ed.start {
				kind = "start"
			}
			c.emit("speech", "edge", kind, "t", ed.t, "from", from)
		}
	}
	silence := func(from, to float64) {
		for t := from; t+0.02 <= to && seg.busy(); t += 0.02 {
			report(seg.push(t, zeros, decodeRate))
			nextT = t + 0.02
		}
	}
	defer func() { report(seg.flush()) }()
	for {
		_ = track.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		pkt, _, err := track.ReadRTP()
		if err != nil {
			if c.isLeaving() || !isTimeout(err) {
				return
			}
			if seg.busy() && nextT > 0 && time.Since(lastPacket) > time.Second {
				silence(nextT, nextT+0.5)
			}
			continue
		}
		now := time.Now()
		lastPacket = now
		if haveTS {
			position += float64(int32(pkt.Timestamp-lastTS)) / 48000.0
		}
		haveTS, lastTS = true, pkt.Timestamp
		n, err := dec.decode(pkt.Payload, pcm)
		if err != nil || n == 0 {
			continue
		}
		t0 := clock.at(mono(now), position)
		if nextT > 0 {
			if t0 > nextT+0.03 {
				silence(nextT, t0) // a DTX gap
			}
			t0 = math.Max(t0, nextT)
		}
		report(seg.push(t0, pcm[:n], decodeRate))
		nextT = t0 + float64(n)/decodeRate
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// ---- the microphone -----------------------------------------------------------------------

type play struct {
	id        int
	u         *utterance
	notBefore float64
	next      int // packet index
	speechAt  float64
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
		data := m.next(now)
		if data == nil {
			if sinceSent++; sinceSent < dtxEvery {
				continue
			}
			data = m.c.e.utterances.silence
		}
		sinceSent = 0
		if err := track.WriteSample(media.Sample{Data: data, Duration: frameDur, Timestamp: ideal}, nil); err != nil {
			return
		}
	}
}

// next: the packet to send now, or nil in silence.
func (m *microphone) next(now time.Time) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) == 0 || mono(now) < m.queue[0].notBefore {
		return nil
	}
	p := m.queue[0]
	i := p.next
	t := mono(now)
	s0, s1 := i*frameSamples, (i+1)*frameSamples
	if s0 <= p.u.speechStart && p.u.speechStart < s1 {
		p.speechAt = t + float64(p.u.speechStart-s0)/micRate
	}
	if s0 < p.u.speechEnd && p.u.speechEnd <= s1 {
		// the end of utterance: when its last speech sample goes out
		m.c.emit("played", "play", p.id, "speech_start", p.speechAt,
			"eou", t+float64(p.u.speechEnd-s0)/micRate)
	}
	p.next++
	if p.next >= len(p.u.packets) {
		m.queue = m.queue[1:]
	}
	return p.u.packets[i]
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
