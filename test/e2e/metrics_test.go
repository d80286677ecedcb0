package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// scrapeMetrics reads GET /metrics from a node's REST API and parses the text format.
func scrapeMetrics(n *localcluster.Node) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics on %s: %s", n.Name, resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(resp.Body)
}

// metricValue is the value of a family's single gauge or counter sample, or the count of its
// single histogram.
func metricValue(mf map[string]*dto.MetricFamily, name string) (float64, bool) {
	f, ok := mf[name]
	if !ok || len(f.Metric) != 1 {
		return 0, false
	}
	m := f.Metric[0]
	switch f.GetType() {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), true
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), true
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount()), true
	}
	return 0, false
}

// TestMetrics scrapes both members of a real cluster: Patroni's metric names with the scope and
// name labels, exactly one primary, and an HA loop histogram that has seen cycles.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 2)
	waitFor(t, "both members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}

	names := []string{"patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time", "patroni_primary",
		"patroni_xlog_location", "patroni_standby_leader", "patroni_replica", "patroni_sync_standby", "patroni_quorum_standby",
		"patroni_xlog_received_location", "patroni_xlog_replayed_location", "patroni_xlog_replayed_timestamp",
		"patroni_xlog_paused", "patroni_postgres_server_version", "patroni_cluster_unlocked", "patroni_failsafe_mode_is_active",
		"patroni_postgres_timeline", "patroni_dcs_last_seen", "patroni_pending_restart", "patroni_is_paused",
		"patroni_postgres_streaming", "patroni_postgres_in_archive_recovery",
		"pgvigil_ha_loop_duration_seconds", "pgvigil_lease_remaining_seconds", "pgvigil_failovers_total",
		"pgvigil_switchovers_total", "pgvigil_last_verdict_info", "pgvigil_store_request_duration_seconds",
		"pgvigil_store_errors_total"}

	// The metrics show the last HA cycle (loop_wait 1 s), which may trail /patroni's live view.
	scrapes := map[string]map[string]*dto.MetricFamily{}
	var lastErr error
	waitFor(t, "metrics showing exactly one primary and a streaming replica", 15*time.Second, func() bool {
		primaries, streaming := 0, 0
		for _, n := range c.Nodes {
			mf, err := scrapeMetrics(n)
			if err != nil {
				lastErr = err
				return false
			}
			scrapes[n.Name] = mf
			if v, _ := metricValue(mf, "patroni_primary"); v == 1 {
				primaries++
			}
			if v, _ := metricValue(mf, "patroni_postgres_streaming"); v == 1 {
				streaming++
			}
		}
		return primaries == 1 && streaming == len(c.Nodes)-1
	})
	if lastErr != nil {
		t.Logf("earlier scrape error: %v", lastErr)
	}

	for _, n := range c.Nodes {
		mf := scrapes[n.Name]
		for _, name := range names {
			f, ok := mf[name]
			if !ok || len(f.Metric) == 0 {
				t.Errorf("%s: metric %s missing", n.Name, name)
				continue
			}
			for _, m := range f.Metric {
				labels := map[string]string{}
				for _, l := range m.Label {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["scope"] != localcluster.DefaultScope || labels["name"] != n.Name {
					t.Errorf("%s: %s labels %v, want scope=%s name=%s", n.Name, name, labels, localcluster.DefaultScope, n.Name)
				}
			}
		}
		isPrimary := 0.0
		if n == p {
			isPrimary = 1
		}
		want := map[string]float64{"patroni_primary": isPrimary, "patroni_replica": 1 - isPrimary,
			"patroni_postgres_running": 1, "patroni_cluster_unlocked": 0, "patroni_postgres_timeline": 1,
			"patroni_postgres_streaming": 1 - isPrimary}
		for name, v := range want {
			if got, ok := metricValue(mf, name); !ok || got != v {
				t.Errorf("%s: %s = %v, want %v", n.Name, name, got, v)
			}
		}
		if got, _ := metricValue(mf, "pgvigil_ha_loop_duration_seconds"); got <= 0 {
			t.Errorf("%s: pgvigil_ha_loop_duration_seconds_count = %v, want > 0", n.Name, got)
		}
		if got, _ := metricValue(mf, "patroni_postgres_server_version"); got < 130000 {
			t.Errorf("%s: patroni_postgres_server_version = %v", n.Name, got)
		}
		lease, _ := metricValue(mf, "pgvigil_lease_remaining_seconds")
		if n == p && lease <= 0 || n != p && lease != 0 {
			t.Errorf("%s: pgvigil_lease_remaining_seconds = %v (primary %v)", n.Name, lease, n == p)
		}
		if n == p {
			if got, _ := metricValue(mf, "patroni_xlog_location"); got <= 0 {
				t.Errorf("%s: patroni_xlog_location = %v on the primary", n.Name, got)
			}
		} else if got, _ := metricValue(mf, "patroni_xlog_replayed_location"); got <= 0 {
			t.Errorf("%s: patroni_xlog_replayed_location = %v on the replica", n.Name, got)
		}
	}
}
