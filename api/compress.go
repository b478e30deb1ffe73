package api

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
)

// compressHandler compresses h's answers with gzip or deflate, whichever the client's
// Accept-Encoding lists first (as Prometheus chooses), at the fastest level and with
// pooled compressors: for the JSON of a query result that costs a fraction of
// Prometheus's default level and a new compressor per request, for slightly larger
// bodies. Answers to clients that accept neither are not compressed.
type compressHandler struct{ h http.Handler }

var (
	gzipWriters = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
		return w
	}}
	zlibWriters = sync.Pool{New: func() any {
		w, _ := zlib.NewWriterLevel(io.Discard, zlib.BestSpeed)
		return w
	}}
)

// compressor is what both pooled writers are.
type compressor interface {
	io.WriteCloser
	Reset(io.Writer)
}

func (c compressHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Vary", "Accept-Encoding")
	var pool *sync.Pool
	switch acceptedEncoding(r.Header.Get("Accept-Encoding")) {
	case "gzip":
		pool = &gzipWriters
		w.Header().Set("Content-Encoding", "gzip")
	case "deflate":
		pool = &zlibWriters
		w.Header().Set("Content-Encoding", "deflate")
	default:
		c.h.ServeHTTP(w, r)
		return
	}
	z := pool.Get().(compressor)
	z.Reset(w)
	c.h.ServeHTTP(&compressedWriter{ResponseWriter: w, z: z}, r)
	z.Close() // writes the trailer
	z.Reset(io.Discard)
	pool.Put(z)
}

// acceptedEncoding is the first of gzip and deflate in an Accept-Encoding header that
// is not refused with q=0, or "". Other q-values do not change the choice.
func acceptedEncoding(header string) string {
	for _, item := range strings.Split(header, ",") {
		enc, params, _ := strings.Cut(item, ";")
		if enc = strings.TrimSpace(enc); enc != "gzip" && enc != "deflate" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		return enc
	}
	return ""
}

// compressedWriter sends the body through the compressor; the length the handler may
// have set is the uncompressed one, so it is dropped.
type compressedWriter struct {
	http.ResponseWriter
	z compressor
}

func (c *compressedWriter) WriteHeader(code int) {
	c.Header().Del("Content-Length")
	c.ResponseWriter.WriteHeader(code)
}

func (c *compressedWriter) Write(p []byte) (int, error) {
	c.Header().Del("Content-Length")
	return c.z.Write(p)
}
