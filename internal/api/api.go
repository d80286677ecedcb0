// Package api serves the Patroni-compatible REST API of a node: status and health checks.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// Source is what the API reads: the agent's last cycle and a live look at PostgreSQL.
type Source interface {
	Snapshot() agent.Snapshot
	Live(ctx context.Context) postgres.Status
}

// Server is the REST API of one member.
type Server struct {
	src     Source
	name    string
	scope   string
	version string
	tags    cluster.Tags
	log     *slog.Logger
	http    *http.Server
}

// New builds the API server.
func New(src Source, name, scope, version string, tags cluster.Tags, log *slog.Logger) *Server {
	s := &Server{src: src, name: name, scope: scope, version: version, tags: tags, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("/patroni", s.handleStatus)
	mux.HandleFunc("/cluster", s.handleCluster)
	mux.HandleFunc("/", s.handleHealth)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s
}

// Serve accepts on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

const tsLayout = "2006-01-02 15:04:05.000000-07:00"

// status builds Patroni's node status document. WAL positions come from a live query so that
// peers racing for the leader key compare current positions, not last cycle's.
func (s *Server) status(r *http.Request) (map[string]any, agent.Snapshot, postgres.Status) {
	snap := s.src.Snapshot()
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	live := s.src.Live(ctx)
	out := map[string]any{
		"state":   agent.State(live, snap.Busy, false),
		"role":    agent.Role(live),
		"patroni": map[string]any{"version": s.version, "scope": s.scope, "name": s.name},
	}
	if !snap.LastStoreOK.IsZero() {
		out["dcs_last_seen"] = snap.LastStoreOK.Unix()
	}
	if snap.View != nil && snap.View.Leader == nil {
		out["cluster_unlocked"] = true
	}
	if tags, _ := json.Marshal(s.tags); string(tags) != "{}" {
		out["tags"] = json.RawMessage(tags)
	}
	if !live.Ready {
		return out, snap, live
	}
	out["postmaster_start_time"] = live.StartTime.UTC().Format(tsLayout)
	out["server_version"] = live.ServerVersion
	out["timeline"] = live.Timeline
	out["database_system_identifier"] = live.SysID
	if live.PendingRestart {
		out["pending_restart"] = true
	}
	if live.InRecovery {
		x := map[string]any{"received_location": live.ReceiveLSN, "replayed_location": live.ReplayLSN, "paused": live.ReplayPaused}
		if live.ReplayedAt.Unix() > 0 {
			x["replayed_timestamp"] = live.ReplayedAt.UTC().Format(tsLayout)
		} else {
			x["replayed_timestamp"] = nil
		}
		out["xlog"] = x
		out["replication_state"] = live.ReplicationState
	} else {
		out["xlog"] = map[string]any{"location": live.Position}
		if len(live.Replication) > 0 {
			out["replication"] = live.Replication
		}
	}
	return out, snap, live
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "Unsupported method", http.StatusNotImplemented)
		return
	}
	st, _, _ := s.status(r)
	writeJSON(w, http.StatusOK, st)
}

// handleHealth answers the load-balancer checks: the status code is the answer.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
		http.Error(w, "Unsupported method", http.StatusNotImplemented)
		return
	}
	st, snap, live := s.status(r)
	primary := snap.Held && live.Ready && !live.InRecovery
	replica := live.Ready && live.InRecovery && !s.tags.NoLoadBalance
	ok := false
	switch r.URL.Path {
	case "/", "/primary", "/master", "/read-write", "/leader":
		ok = primary
	case "/replica":
		ok = replica && lagOK(r, snap, live)
	case "/read-only":
		ok = primary || (replica && lagOK(r, snap, live))
	case "/health":
		ok = live.Ready
	default:
		ok = false
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	if r.Method != http.MethodGet {
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, st)
}

// lagOK applies ?lag=<bytes> against the leader's last position in the store, as Patroni does.
func lagOK(r *http.Request, snap agent.Snapshot, live postgres.Status) bool {
	q := r.URL.Query().Get("lag")
	if q == "" || snap.View == nil {
		return true
	}
	max, err := strconv.ParseInt(q, 10, 64)
	if err != nil {
		return false
	}
	return snap.View.Status.Optime <= live.ReplayLSN+max
}

// handleCluster lists members from the store.
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	snap := s.src.Snapshot()
	out := map[string]any{"scope": s.scope}
	members := []map[string]any{}
	if v := snap.View; v != nil {
		for _, m := range v.Members {
			host, port := m.HostPort()
			e := map[string]any{"name": m.Name, "state": m.State, "api_url": m.APIURL, "host": host, "port": port}
			if m.Timeline > 0 {
				e["timeline"] = m.Timeline
			}
			if v.Leader != nil && v.Leader.Name == m.Name {
				e["role"] = "leader"
			} else {
				e["role"] = m.Role
				if m.ReplicationState != "" {
					e["state"] = m.ReplicationState
				}
				if m.XLogLocation != nil {
					e["lag"] = max(v.Status.Optime-*m.XLogLocation, 0)
				} else {
					e["lag"] = "unknown"
				}
			}
			if tags, _ := json.Marshal(m.Tags); string(tags) != "{}" {
				e["tags"] = json.RawMessage(tags)
			}
			if m.PendingRestart {
				e["pending_restart"] = true
			}
			members = append(members, e)
		}
		if v.Config.Pause {
			out["pause"] = true
		}
	}
	out["members"] = members
	writeJSON(w, http.StatusOK, out)
}
