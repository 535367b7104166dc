package main

// Utterances as Opus packets, encoded once per layout and shared by every call of the process:
// encoding per play would cost more than the whole rest of a caller.

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
)

// layout: leading silence, a run of the rendered speech file, trailing silence (samples, 48 kHz).
type layout struct {
	File   string `json:"file"`
	Offset int    `json:"offset"`
	Speech int    `json:"speech"`
	Lead   int    `json:"lead"`
	Trail  int    `json:"trail"`
}

type utterance struct {
	packets     [][]byte
	speechStart int // sample index of the first speech sample
	speechEnd   int // one past the last
}

type utteranceCache struct {
	mu      sync.Mutex
	entries map[layout]*utterance
	silence []byte
}

func newUtteranceCache() (*utteranceCache, error) {
	enc, err := newEncoder()
	if err != nil {
		return nil, err
	}
	defer enc.close()
	zero := make([]int16, frameSamples)
	var pkt []byte
	for i := 0; i < 5; i++ { // past the encoder's start-up frames
		if pkt, err = enc.encode(zero); err != nil {
			return nil, err
		}
	}
	return &utteranceCache{entries: map[layout]*utterance{}, silence: pkt}, nil
}

func (c *utteranceCache) get(l layout) (*utterance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.entries[l]; ok {
		return u, nil
	}
	u, err := encodeLayout(l)
	if err != nil {
		return nil, err
	}
	if len(c.entries) >= 256 {
		c.entries = map[layout]*utterance{}
	}
	c.entries[l] = u
	return u, nil
}

func encodeLayout(l layout) (*utterance, error) {
	if l.Speech <= 0 || l.Offset < 0 || l.Lead < 0 || l.Trail < 0 {
		return nil, fmt.Errorf("bad utterance layout %+v", l)
	}
	raw, err := os.ReadFile(l.File)
	if err != nil {
		return nil, err
	}
	if (l.Offset+l.Speech)*2 > len(raw) {
		return nil, fmt.Errorf("%s: %d samples, the layout wants %d", l.File, len(raw)/2, l.Offset+l.Speech)
	}
	total := l.Lead + l.Speech + l.Trail
	total += (frameSamples - total%frameSamples) % frameSamples
	pcm := make([]int16, total)
	for i := 0; i < l.Speech; i++ {
		pcm[l.Lead+i] = int16(binary.LittleEndian.Uint16(raw[2*(l.Offset+i):]))
	}
	enc, err := newEncoder()
	if err != nil {
		return nil, err
	}
	defer enc.close()
	u := &utterance{speechStart: l.Lead, speechEnd: l.Lead + l.Speech}
	for i := 0; i < total; i += frameSamples {
		pkt, err := enc.encode(pcm[i : i+frameSamples])
		if err != nil {
			return nil, err
		}
		u.packets = append(u.packets, pkt)
	}
	return u, nil
}
