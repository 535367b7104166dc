// Echo rooms the way `lk perf agent-load-test --rooms N` makes them (livekit-cli's
// pkg/loadtester/agentloadtester.go), for bench/lk_compare.py where lk cannot be built: one
// "echo-participant" per room publishes an Opus track, waits for an agent-kind participant,
// and sends back every RTP payload of the first audio track it subscribes to, `delay` after
// it arrived, without decoding it. Rooms are opened one at a time, each after the previous
// one's agent joined, as lk does.
package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

type echoRoom struct {
	room   *lksdk.Room
	track  *lksdk.LocalTrack
	delay  time.Duration
	first  atomic.Bool
	agent  chan struct{}
	once   sync.Once
	echoed atomic.Int64 // payloads sent back
}

func (r *echoRoom) onTrackSubscribed(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
	if track.Kind() != webrtc.RTPCodecTypeAudio || !r.first.CompareAndSwap(false, true) {
		return
	}
	type stamped struct {
		sample media.Sample
		at     time.Time
	}
	samples := make(chan stamped, 1000)
	go func() {
		defer close(samples)
		for {
			pkt, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			samples <- stamped{media.Sample{Data: pkt.Payload, Duration: frame}, time.Now()}
		}
	}()
	go func() {
		for s := range samples {
			if wait := time.Until(s.at.Add(r.delay)); wait > 0 {
				time.Sleep(wait)
			}
			if r.track.WriteSample(s.sample, nil) == nil {
				r.echoed.Add(1)
			}
		}
	}()
}

func (r *echoRoom) open(url, key, secret, name string) error {
	r.room = lksdk.NewRoom(&lksdk.RoomCallback{
		ParticipantCallback: lksdk.ParticipantCallback{OnTrackSubscribed: r.onTrackSubscribed},
		OnParticipantConnected: func(rp *lksdk.RemoteParticipant) {
			if rp.Kind() == lksdk.ParticipantAgent {
				r.once.Do(func() { close(r.agent) })
			}
		},
	})
	if err := r.room.Join(url, lksdk.ConnectInfo{APIKey: key, APISecret: secret, RoomName: name,
		ParticipantIdentity: "echo-participant"}); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus})
	if err != nil {
		return fmt.Errorf("track: %w", err)
	}
	r.track = track
	if _, err := r.room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "echo-track"}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-r.agent:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("no agent joined within 30 s")
	}
}

// runEcho prints {"ready": rooms with an agent, "failed", "pid"}, echoes for `duration`, then
// {"done": rooms, "echoed": rooms that sent back at least one payload}; it exits 1 if a room failed.
func runEcho(url, key, secret string, n int, prefix string, delay, duration time.Duration) int {
	rooms := make([]*echoRoom, 0, n)
	failed := 0
	for i := 0; i < n; i++ {
		r := &echoRoom{delay: delay, agent: make(chan struct{})}
		if err := r.open(url, key, secret, fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), i)); err != nil {
			fmt.Fprintf(os.Stderr, "lkpub: echo room %d: %v\n", i, err)
			failed++
		}
		rooms = append(rooms, r)
	}
	say(map[string]any{"ready": n - failed, "failed": failed, "pid": os.Getpid()})
	time.Sleep(duration)
	echoed := 0
	for _, r := range rooms {
		if r.echoed.Load() > 0 {
			echoed++
		}
		if r.room != nil {
			r.room.Disconnect()
		}
	}
	say(map[string]any{"done": n - failed, "echoed": echoed})
	if failed > 0 {
		return 1
	}
	return 0
}
