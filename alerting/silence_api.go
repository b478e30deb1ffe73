package alerting

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	amlabels "github.com/prometheus/alertmanager/pkg/labels"
)

// maxSilenceBody bounds a POSTed silence.
const maxSilenceBody = 1 << 20

// RegisterRoutes registers the silences API on mux, in Alertmanager's JSON:
//
//	GET    /api/v1/silences[?filter=<matcher>...]  list (also /api/v2/silences)
//	POST   /api/v1/silences                        create or update; answers {"silenceID": "..."}
//	GET    /api/v1/silence/{id}                    one silence
//	DELETE /api/v1/silence/{id}                    expire it
//
// The /api/v2 paths are the same handlers, so amtool works against Vigil.
func (s *Silences) RegisterRoutes(mux *http.ServeMux) {
	for _, v := range []string{"v1", "v2"} {
		mux.HandleFunc("GET /api/"+v+"/silences", s.handleList)
		mux.HandleFunc("POST /api/"+v+"/silences", s.handlePost)
		mux.HandleFunc("GET /api/"+v+"/silence/{id}", s.handleGet)
		mux.HandleFunc("DELETE /api/"+v+"/silence/{id}", s.handleDelete)
	}
}

func (s *Silences) handleList(w http.ResponseWriter, r *http.Request) {
	var filter amlabels.Matchers
	for _, f := range r.URL.Query()["filter"] {
		m, err := amlabels.ParseMatcher(f)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("filter %q: %w", f, err))
			return
		}
		filter = append(filter, m)
	}
	writeJSONBody(w, http.StatusOK, s.List(time.Now(), filter))
}

func (s *Silences) handlePost(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSilenceBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read body: %w", err))
		return
	}
	if len(body) > maxSilenceBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("silence larger than %d bytes", maxSilenceBody))
		return
	}
	var in Silence
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("decode silence: %w", err))
		return
	}
	id, err := s.Set(r.Context(), in, time.Now())
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSONBody(w, http.StatusOK, map[string]string{"silenceID": id})
}

func (s *Silences) handleGet(w http.ResponseWriter, r *http.Request) {
	sil, err := s.Get(r.PathValue("id"), time.Now())
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSONBody(w, http.StatusOK, sil)
}

func (s *Silences) handleDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Expire(r.Context(), r.PathValue("id"), time.Now()); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func statusOf(err error) int {
	var ve *ValidationError
	switch {
	case errors.Is(err, ErrSilenceNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrSilenceExpired), errors.As(err, &ve):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// writeError answers a JSON string with the message, as Alertmanager's API does.
func writeError(w http.ResponseWriter, status int, err error) {
	writeJSONBody(w, status, err.Error())
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
