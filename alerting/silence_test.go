package alerting

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

func apiCall(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSilencesAPI(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir)
	s, _, err := openSilences(l, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.RegisterRoutes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	end := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	code, body := apiCall(t, srv, "POST", "/api/v1/silences", `{"matchers":[{"name":"alertname","value":"Disk.*","isRegex":true},{"name":"env","value":"dev","isRegex":false,"isEqual":false}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"`+end+`","createdBy":"alice","comment":"maintenance"}`)
	if code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	var created struct{ SilenceID string }
	json.Unmarshal([]byte(body), &created)
	if created.SilenceID == "" {
		t.Fatalf("POST answered %s", body)
	}

	code, body = apiCall(t, srv, "GET", "/api/v1/silences", "")
	var list []Silence
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list) != 1 {
		t.Fatalf("GET: %d %s %v", code, body, err)
	}
	got := list[0]
	if got.ID != created.SilenceID || got.Status.State != "active" || got.CreatedBy != "alice" || got.Comment != "maintenance" ||
		len(got.Matchers) != 2 || !got.Matchers[0].IsRegex || got.Matchers[1].IsEqual == nil || *got.Matchers[1].IsEqual {
		t.Errorf("listed %+v", got)
	}
	if got.StartsAt.Year() == 2020 {
		t.Error("a start in the past should become now")
	}
	for _, k := range []string{`"id"`, `"matchers"`, `"isRegex"`, `"isEqual"`, `"startsAt"`, `"endsAt"`, `"createdBy"`, `"comment"`, `"status":{"state":"active"}`} {
		if !strings.Contains(body, k) {
			t.Errorf("GET body lacks %s: %s", k, body)
		}
	}
	now := time.Now()
	if !s.Mutes(model.LabelSet{"alertname": "DiskFull", "env": "prod"}, now) {
		t.Error("matching alert not muted")
	}
	if s.Mutes(model.LabelSet{"alertname": "DiskFull", "env": "dev"}, now) {
		t.Error("negated matcher ignored")
	}
	if code, body = apiCall(t, srv, "GET", "/api/v1/silences?filter=alertname%3D~%22Disk.%2A%22", ""); code != 200 || !strings.Contains(body, created.SilenceID) {
		t.Errorf("filtered GET: %d %s", code, body)
	}
	if code, body = apiCall(t, srv, "GET", "/api/v1/silences?filter=alertname%3D%22Other%22", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("non-matching filter: %d %s", code, body)
	}

	// Invalid silences: 400 with a message.
	for _, bad := range []string{
		`{"matchers":[],"endsAt":"` + end + `","createdBy":"a","comment":"c"}`,
		`{"matchers":[{"name":"a","value":""}],"endsAt":"` + end + `","createdBy":"a","comment":"c"}`,
		`{"matchers":[{"name":"a","value":"(","isRegex":true}],"endsAt":"` + end + `","createdBy":"a","comment":"c"}`,
		`{"matchers":[{"name":"a","value":"b"}],"endsAt":"2020-01-01T00:00:00Z","createdBy":"a","comment":"c"}`,
		`{"matchers":[{"name":"a","value":"b"}],"endsAt":"` + end + `","comment":"c"}`,
		`not json`,
	} {
		if code, body := apiCall(t, srv, "POST", "/api/v1/silences", bad); code != 400 {
			t.Errorf("POST %s: %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := apiCall(t, srv, "DELETE", "/api/v1/silence/nope", ""); code != 404 {
		t.Errorf("DELETE unknown: %d, want 404", code)
	}

	// Expire it, then it survives a restart as expired.
	if code, body := apiCall(t, srv, "DELETE", "/api/v1/silence/"+created.SilenceID, ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _ := apiCall(t, srv, "DELETE", "/api/v1/silence/"+created.SilenceID, ""); code != 400 {
		t.Errorf("second DELETE: %d, want 400", code)
	}
	if s.Mutes(model.LabelSet{"alertname": "DiskFull"}, time.Now()) {
		t.Error("expired silence still mutes")
	}
	l.Close()
	l = openTestLog(t, dir)
	defer l.Close()
	s2, _, err := openSilences(l, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sil, err := s2.Get(created.SilenceID, time.Now())
	if err != nil || sil.Status.State != "expired" || sil.Comment != "maintenance" {
		t.Fatalf("after reopen: %+v %v", sil, err)
	}
}

// TestSilenceUpdate: changing only the end of an active silence updates it in place;
// changing its matchers expires it and creates a new one (Alertmanager's rule).
func TestSilenceUpdate(t *testing.T) {
	l := openTestLog(t, t.TempDir())
	defer l.Close()
	s, _, err := openSilences(l, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	in := Silence{Matchers: []SilenceMatcher{{Name: "job", Value: "api"}}, EndsAt: now.Add(time.Hour), CreatedBy: "a", Comment: "c"}
	id, err := s.Set(ctx, in, now)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := s.Get(id, now)
	cur.EndsAt = now.Add(2 * time.Hour)
	id2, err := s.Set(ctx, cur, now.Add(time.Second))
	if err != nil || id2 != id {
		t.Fatalf("extending: id %s -> %s, %v", id, id2, err)
	}
	cur, _ = s.Get(id, now)
	cur.Matchers = []SilenceMatcher{{Name: "job", Value: "db"}}
	id3, err := s.Set(ctx, cur, now.Add(2*time.Second))
	if err != nil || id3 == id {
		t.Fatalf("changing matchers: id %s -> %s, %v", id, id3, err)
	}
	if old, _ := s.Get(id, now.Add(3*time.Second)); old.Status.State != "expired" {
		t.Errorf("old silence %s, want expired", old.Status.State)
	}
	// Pending silences: state pending until their start.
	pid, err := s.Set(ctx, Silence{Matchers: []SilenceMatcher{{Name: "job", Value: "x"}}, StartsAt: now.Add(time.Hour), EndsAt: now.Add(2 * time.Hour), CreatedBy: "a", Comment: "c"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Get(pid, now); p.Status.State != "pending" {
		t.Errorf("future silence is %s", p.Status.State)
	}
	if s.Mutes(model.LabelSet{"job": "x"}, now) {
		t.Error("pending silence mutes")
	}
	if !s.Mutes(model.LabelSet{"job": "x"}, now.Add(90*time.Minute)) {
		t.Error("silence does not mute once started")
	}
	// Garbage collection after the retention.
	if err := s.gc(ctx, now.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := s.List(now, nil); len(got) != 0 {
		t.Errorf("%d silences left after gc", len(got))
	}
}

// TestSilenceMutesPipeline: a silenced alert is not notified; once the silence
// expires, the next flush notifies it.
func TestSilenceMutesPipeline(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_wait: 0s\n  group_interval: 100ms\n  group_by: [alertname]", ""), nil)
	now := time.Now()
	id, err := p.Silences().Set(context.Background(), Silence{Matchers: []SilenceMatcher{{Name: "alertname", Value: "Quiet"}}, EndsAt: now.Add(time.Hour), CreatedBy: "t", Comment: "c"}, now)
	if err != nil {
		t.Fatal(err)
	}
	send(t, p, alert(now, time.Time{}, "alertname=Quiet"), alert(now, time.Time{}, "alertname=Loud"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if ms := sink.messages(); len(ms) != 1 || ms[0].GroupLabels["alertname"] != "Loud" {
		t.Fatalf("notifications %v, want only Loud", ms)
	}
	if err := p.Silences().Expire(context.Background(), id, time.Now()); err != nil {
		t.Fatal(err)
	}
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if ms[1].GroupLabels["alertname"] != "Quiet" {
		t.Errorf("after expiry got %v", ms[1].GroupLabels)
	}
}

// FuzzSilencePost feeds arbitrary bodies to POST /api/v1/silences: never a panic or
// a 5xx, and what is accepted can be read back.
func FuzzSilencePost(f *testing.F) {
	f.Add([]byte(`{"matchers":[{"name":"alertname","value":"A","isRegex":false}],"endsAt":"2099-01-01T00:00:00Z","createdBy":"a","comment":"c"}`))
	f.Add([]byte(`{"id":"x","matchers":[{"name":"a","value":".*","isRegex":true,"isEqual":false}],"startsAt":"2099-01-01T00:00:00Z","endsAt":"2099-01-02T00:00:00Z","createdBy":"a","comment":"c"}`))
	f.Add([]byte(`{"matchers":null}`))
	f.Add([]byte(`[]`))
	l := openTestLog(f, f.TempDir())
	defer l.Close()
	s, _, err := openSilences(l, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	s.RegisterRoutes(mux)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/silences", strings.NewReader(string(body))))
		if rec.Code >= 500 {
			t.Fatalf("POST %q: %d %s", body, rec.Code, rec.Body)
		}
		if rec.Code == 200 {
			var out struct{ SilenceID string }
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(out.SilenceID, time.Now()); err != nil {
				t.Fatalf("accepted silence %s not found", out.SilenceID)
			}
		}
	})
}
