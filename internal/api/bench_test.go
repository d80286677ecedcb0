package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func BenchmarkStatus(b *testing.B) {
	name, tags, src := leaderNode()
	srv := New(Options{Source: src, Name: name, Scope: "s", Version: "0", Tags: tags})
	h := srv.Handler()
	for _, path := range []string{"/patroni", "/primary", "/cluster"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			}
		})
	}
}
