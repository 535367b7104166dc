package main

// libopus through cgo (Debian: libopus-dev to build, libopus0 to run). Only the calls the
// caller needs: a mono 48 kHz VoIP encoder for the utterances (encoded once, cached) and a
// mono decoder at 16 kHz for the agent's audio (enough for onset detection, and a third of the
// work of decoding at 48 kHz).

/*
#cgo pkg-config: opus
#include <opus.h>

static int lk_set_bitrate(OpusEncoder *e, opus_int32 b) { return opus_encoder_ctl(e, OPUS_SET_BITRATE(b)); }
static int lk_set_complexity(OpusEncoder *e, opus_int32 c) { return opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(c)); }
*/
import "C"

import (
	"fmt"
	"unsafe"
)

const (
	micRate      = 48000
	frameSamples = micRate / 50 // 20 ms
	decodeRate   = 16000
)

type opusEncoder struct{ e *C.OpusEncoder }

func newEncoder() (*opusEncoder, error) {
	var errc C.int
	e := C.opus_encoder_create(C.opus_int32(micRate), 1, C.OPUS_APPLICATION_VOIP, &errc)
	if errc != C.OPUS_OK || e == nil {
		return nil, fmt.Errorf("opus_encoder_create: %s", C.GoString(C.opus_strerror(errc)))
	}
	C.lk_set_bitrate(e, 32000)
	C.lk_set_complexity(e, 5)
	return &opusEncoder{e}, nil
}

// encode turns one 20 ms frame of 48 kHz mono PCM into one Opus packet.
func (o *opusEncoder) encode(pcm []int16) ([]byte, error) {
	if len(pcm) != frameSamples {
		return nil, fmt.Errorf("opus encode: %d samples, want %d", len(pcm), frameSamples)
	}
	buf := make([]byte, 1500)
	n := C.opus_encode(o.e, (*C.opus_int16)(unsafe.Pointer(&pcm[0])), C.int(frameSamples),
		(*C.uchar)(unsafe.Pointer(&buf[0])), C.opus_int32(len(buf)))
	if n < 0 {
		return nil, fmt.Errorf("opus_encode: %s", C.GoString(C.opus_strerror(n)))
	}
	return buf[:n], nil
}

func (o *opusEncoder) close() { C.opus_encoder_destroy(o.e) }

type opusDecoder struct{ d *C.OpusDecoder }

func newDecoder() (*opusDecoder, error) {
	var errc C.int
	d := C.opus_decoder_create(C.opus_int32(decodeRate), 1, &errc)
	if errc != C.OPUS_OK || d == nil {
		return nil, fmt.Errorf("opus_decoder_create: %s", C.GoString(C.opus_strerror(errc)))
	}
	return &opusDecoder{d}, nil
}

// decode writes the packet's samples (16 kHz mono) into out and returns how many; an empty
// packet asks the decoder to conceal a lost one.
func (o *opusDecoder) decode(packet []byte, out []int16) (int, error) {
	var data *C.uchar
	if len(packet) > 0 {
		data = (*C.uchar)(unsafe.Pointer(&packet[0]))
	}
	n := C.opus_decode(o.d, data, C.opus_int32(len(packet)),
		(*C.opus_int16)(unsafe.Pointer(&out[0])), C.int(len(out)), 0)
	if n < 0 {
		return 0, fmt.Errorf("opus_decode: %s", C.GoString(C.opus_strerror(n)))
	}
	return int(n), nil
}

func (o *opusDecoder) close() { C.opus_decoder_destroy(o.d) }
