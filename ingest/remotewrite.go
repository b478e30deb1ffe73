package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/snappy"
)

// Remote-write content negotiation, as the 2.0 specification says
// (https://prometheus.io/docs/specs/remote_write_spec_2_0/#protocol):
//
//	Content-Type: application/x-protobuf                                   -> 1.0
//	Content-Type: application/x-protobuf;proto=prometheus.WriteRequest     -> 1.0
//	Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request -> 2.0
//	(no Content-Type)                                                      -> 1.0
//	anything else                                                          -> 415
//	Content-Encoding: snappy (or none, for old 1.0 senders)                -> accepted
//	any other Content-Encoding                                             -> 415
const (
	protoV1 = "prometheus.WriteRequest"
	protoV2 = "io.prometheus.write.v2.Request"

	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// RemoteWriteVersion is the remote-write protocol of a request.
type RemoteWriteVersion uint8

// Remote-write versions.
const (
	RemoteWriteV1 RemoteWriteVersion = 1
	RemoteWriteV2 RemoteWriteVersion = 2
)

// NegotiateRemoteWrite maps a request's Content-Type and Content-Encoding to the
// protocol version, or returns an error saying what is not supported (HTTP 415).
func NegotiateRemoteWrite(contentType, contentEncoding string) (RemoteWriteVersion, error) {
	if enc := strings.TrimSpace(contentEncoding); enc != "" && !strings.EqualFold(enc, "snappy") {
		return 0, fmt.Errorf("Content-Encoding %q is not supported; only snappy is", enc)
	}
	ct := strings.TrimSpace(contentType)
	if ct == "" {
		return RemoteWriteV1, nil
	}
	parts := strings.Split(ct, ";")
	if !strings.EqualFold(strings.TrimSpace(parts[0]), "application/x-protobuf") {
		return 0, fmt.Errorf("Content-Type %q is not supported; send application/x-protobuf with proto=%s or proto=%s", ct, protoV1, protoV2)
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return 0, fmt.Errorf("Content-Type %q: parameter %q is not key=value", ct, p)
		}
		if !strings.EqualFold(strings.TrimSpace(k), "proto") {
			continue
		}
		switch strings.Trim(strings.TrimSpace(v), `"`) {
		case protoV1:
			return RemoteWriteV1, nil
		case protoV2:
			return RemoteWriteV2, nil
		default:
			return 0, fmt.Errorf("Content-Type %q: proto %q is not supported; use %s or %s", ct, v, protoV1, protoV2)
		}
	}
	return RemoteWriteV1, nil
}

// RemoteWriteHandler is the `POST /api/v1/write` endpoint. It answers 204 only after
// the request's series are in the log; 400 for input that will never succeed (with the
// valid series of the request still appended and the rejected ones counted in the
// message); 413 for a body over the limits; 415 for an unsupported Content-Type or
// Content-Encoding; 429 (overloaded) or 503 (log unavailable) with Retry-After. Safe
// for concurrent use.
type RemoteWriteHandler struct {
	w      *Writer
	logger *slog.Logger
	bufs   sync.Pool // *rwState
}

type rwState struct {
	body    []byte
	decoded []byte
	batch   Batch
	v2      V2Decoder
}

// NewRemoteWriteHandler makes the handler over w; logger may be nil.
func NewRemoteWriteHandler(w *Writer, logger *slog.Logger) *RemoteWriteHandler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &RemoteWriteHandler{w: w, logger: logger}
	h.bufs.New = func() any { return new(rwState) }
	return h
}

// ServeHTTP handles one remote-write request.
func (h *RemoteWriteHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	ver, err := NegotiateRemoteWrite(r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"))
	if err != nil {
		h.w.Reject(ReasonUnsupportedMediaType)
		http.Error(rw, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	lim := h.w.Limits()
	maxBody := int64(lim.MaxRequestBytes)
	if r.ContentLength > maxBody {
		h.tooLarge(rw, "request body of %d bytes exceeds limits.max_request_bytes (%d)", r.ContentLength, maxBody)
		return
	}
	// Reserve the compressed body's bytes before reading it.
	reserve := r.ContentLength
	if reserve < 0 {
		reserve = maxBody
	}
	if err := h.w.Acquire(reserve); err != nil {
		h.retryLater(rw, http.StatusTooManyRequests, err)
		return
	}
	defer func() { h.w.Release(reserve) }()

	st := h.bufs.Get().(*rwState)
	defer h.putState(st)
	if r.ContentLength > 0 && int64(cap(st.body)) < r.ContentLength+1 {
		st.body = make([]byte, 0, r.ContentLength+1) // +1: EOF is seen without growing
	}
	body, err := readBody(st.body[:0], r.Body, maxBody)
	st.body = body
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			h.tooLarge(rw, "request body exceeds limits.max_request_bytes (%d)", maxBody)
			return
		}
		h.w.Reject(ReasonDecode)
		http.Error(rw, "cannot read the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if r.ContentLength < 0 { // now we know the size: give back the excess
		h.w.Release(reserve - int64(len(body)))
		reserve = int64(len(body))
	}
	// Refuse a snappy bomb before inflating it.
	n, err := snappy.DecodedLen(body)
	if err != nil {
		h.w.Reject(ReasonDecode)
		http.Error(rw, "cannot decode snappy: "+err.Error(), http.StatusBadRequest)
		return
	}
	if maxDec := int64(lim.MaxDecompressedBytes); int64(n) > maxDec {
		h.tooLarge(rw, "decompressed body of %d bytes would exceed limits.max_decompressed_bytes (%d)", n, maxDec)
		return
	}
	// While decoded and encoded, a request holds its decompressed body, the batch
	// (label and sample structs pointing into it) and the encoded sample batches: about
	// four times the decompressed size.
	charge := decodedCharge * int64(n)
	if err := h.w.Acquire(charge); err != nil {
		h.retryLater(rw, http.StatusTooManyRequests, err)
		return
	}
	defer h.w.Release(charge)
	h.w.beginWork()
	defer h.w.endWork()
	if cap(st.decoded) < n {
		st.decoded = make([]byte, n)
	}
	decoded, err := snappy.Decode(st.decoded[:n], body)
	if err != nil {
		h.w.Reject(ReasonDecode)
		http.Error(rw, "cannot decode snappy: "+err.Error(), http.StatusBadRequest)
		return
	}

	b := &st.batch
	b.Reset()
	var derr error
	if ver == RemoteWriteV2 {
		b.useCache(h.w.known)
		b.deriveKeys = true
		_, derr = st.v2.Decode(b, decoded)
	} else {
		b.useCache(h.w.known)
		_, derr = DecodeWriteV1(b, decoded)
	}
	if derr != nil {
		h.w.Reject(ReasonDecode)
		if ver == RemoteWriteV2 {
			writtenHeaders(rw, Result{})
		}
		http.Error(rw, derr.Error(), http.StatusBadRequest)
		return
	}
	res, err := h.w.Write(r.Context(), b, ProtocolRemoteWrite)
	if ver == RemoteWriteV2 {
		writtenHeaders(rw, res)
	}
	if err != nil {
		var re *RequestError
		switch {
		case errors.As(err, &re):
			http.Error(rw, re.Error(), http.StatusBadRequest)
		case errors.Is(err, ErrOverloaded):
			h.retryLater(rw, http.StatusTooManyRequests, err)
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			h.retryLater(rw, http.StatusServiceUnavailable, err)
		default:
			h.retryLater(rw, http.StatusServiceUnavailable, err)
		}
		return
	}
	if n := res.Rejected.Total(); n > 0 {
		http.Error(rw, fmt.Sprintf("%s; %d series accepted", res.Rejected.String(), b.Len()-n), http.StatusBadRequest)
		return
	}
	rw.WriteHeader(http.StatusNoContent)
}

func (h *RemoteWriteHandler) putState(st *rwState) {
	st.batch.Reset()
	// Do not keep huge buffers for ever.
	if cap(st.decoded) > 64<<20 {
		st.decoded = nil
	}
	if cap(st.body) > 16<<20 {
		st.body = nil
	}
	h.bufs.Put(st)
}

func (h *RemoteWriteHandler) tooLarge(rw http.ResponseWriter, format string, args ...any) {
	h.w.Reject(ReasonBodyTooLarge)
	http.Error(rw, fmt.Sprintf(format, args...), http.StatusRequestEntityTooLarge)
}

func (h *RemoteWriteHandler) retryLater(rw http.ResponseWriter, code int, err error) {
	if errors.Is(err, ErrOverloaded) {
		h.w.Reject(ReasonOverloaded)
	}
	rw.Header().Set("Retry-After", "1")
	http.Error(rw, err.Error(), code)
}

func writtenHeaders(rw http.ResponseWriter, res Result) {
	hd := rw.Header()
	hd.Set(headerSamplesWritten, strconv.Itoa(res.Samples))
	hd.Set(headerHistogramsWritten, strconv.Itoa(res.Histograms))
	hd.Set(headerExemplarsWritten, strconv.Itoa(res.Exemplars))
}

var errBodyTooLarge = errors.New("body too large")

// decodedCharge is what a decompressed byte costs in the in-flight budget.
const decodedCharge = 4

// readBody reads all of r into dst, failing with errBodyTooLarge past max bytes.
func readBody(dst []byte, r io.Reader, max int64) ([]byte, error) {
	for {
		if int64(len(dst)) > max {
			return dst, errBodyTooLarge
		}
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			if int64(len(dst)) > max {
				return dst, errBodyTooLarge
			}
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
