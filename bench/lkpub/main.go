// lkpub: N audio publishers the way `lk perf load-test --audio-publishers N` makes them, for
// bench/lk_compare.py when the LiveKit CLI itself cannot be built here (bench/install-lk.sh).
//
// Like lk's load tester it uses the Go server SDK (server-sdk-go/v2) and publishes an already
// Opus-encoded clip in a loop (no encoder, no subscription): one room and one participant per
// publisher, one microphone track, 20 ms packets paced by the SDK's writer. It is a stand-in
// written for this rig, not lk: docs/benchmarks.md says so next to its numbers.
//
//	lkpub -url ws://127.0.0.1:7880 -key K -secret S -n 10 -opus clip.ogg -duration 60s
//
// Prints {"ready": n, "pid": p} once every publisher is publishing, then {"done": n} at the end.
// With -echo it opens n echo rooms instead, as `lk perf agent-load-test` does (echo.go).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

const frame = 20 * time.Millisecond

// loop hands out the clip's packets forever.
type loop struct {
	packets [][]byte
	i       int
}

func (l *loop) NextSample(context.Context) (media.Sample, error) {
	p := l.packets[l.i]
	l.i = (l.i + 1) % len(l.packets)
	return media.Sample{Data: p, Duration: frame}, nil
}
func (l *loop) OnBind() error   { return nil }
func (l *loop) OnUnbind() error { return nil }
func (l *loop) Close() error    { return nil }

// readOpus returns the audio packets of an Ogg Opus file written one packet per page
// (opusenc --max-delay 0), skipping the OpusHead and OpusTags pages.
func readOpus(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out [][]byte
	for {
		payload, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if bytes.HasPrefix(payload, []byte("OpusTags")) || len(payload) == 0 {
			continue
		}
		out = append(out, payload)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no Opus packets", path)
	}
	return out, nil
}

func say(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func main() {
	url := flag.String("url", os.Getenv("LIVEKIT_URL"), "livekit-server URL")
	key := flag.String("key", os.Getenv("LIVEKIT_API_KEY"), "API key")
	secret := flag.String("secret", os.Getenv("LIVEKIT_API_SECRET"), "API secret")
	n := flag.Int("n", 1, "publishers")
	clip := flag.String("opus", "", "Ogg Opus clip, one 20 ms packet per page")
	duration := flag.Duration("duration", time.Minute, "how long to publish once all are up")
	prefix := flag.String("room-prefix", "lkpub", "room name prefix")
	echo := flag.Bool("echo", false, "open n echo rooms (lk perf agent-load-test) instead of publishers")
	echoDelay := flag.Duration("echo-delay", 5*time.Second, "how long an echo room holds what it hears")
	flag.Parse()
	if *echo && *url != "" && *key != "" && *secret != "" && *n >= 1 {
		os.Exit(runEcho(*url, *key, *secret, *n, *prefix, *echoDelay, *duration))
	}
	if *url == "" || *key == "" || *secret == "" || *clip == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "lkpub: -url, -key, -secret (or LIVEKIT_* variables), -n >= 1 and -opus (or -echo) are required")
		os.Exit(2)
	}
	packets, err := readOpus(*clip)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lkpub:", err)
		os.Exit(2)
	}
	rooms := make([]*lksdk.Room, *n)
	var wg sync.WaitGroup
	errs := make(chan error, *n)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			room, err := lksdk.ConnectToRoom(*url, lksdk.ConnectInfo{
				APIKey: *key, APISecret: *secret,
				RoomName:            fmt.Sprintf("%s-%d-%d", *prefix, os.Getpid(), i),
				ParticipantIdentity: fmt.Sprintf("pub-%d", i),
			}, lksdk.NewRoomCallback(), lksdk.WithAutoSubscribe(false))
			if err != nil {
				errs <- fmt.Errorf("publisher %d: connect: %w", i, err)
				return
			}
			rooms[i] = room
			track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
			if err != nil {
				errs <- fmt.Errorf("publisher %d: track: %w", i, err)
				return
			}
			if _, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
				Name: "mic", Source: livekit.TrackSource_MICROPHONE}); err != nil {
				errs <- fmt.Errorf("publisher %d: publish: %w", i, err)
				return
			}
			// every publisher starts at its own point of the clip, as callers would
			if err := track.StartWrite(&loop{packets: packets, i: (i * 37) % len(packets)}, nil); err != nil {
				errs <- fmt.Errorf("publisher %d: write: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		fmt.Fprintln(os.Stderr, "lkpub:", err)
		failed++
	}
	say(map[string]any{"ready": *n - failed, "failed": failed, "pid": os.Getpid()})
	time.Sleep(*duration)
	for _, r := range rooms {
		if r != nil {
			r.Disconnect()
		}
	}
	say(map[string]any{"done": *n - failed})
	if failed > 0 {
		os.Exit(1)
	}
}
