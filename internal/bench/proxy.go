package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// ProxyOptions for Proxy.
type ProxyOptions struct {
	Duration    time.Duration // per pgbench run
	Clients     int
	Rounds      int // each target's runs are split into this many rounds, interleaved with the others
	Scale       int
	PoolSize    int
	IdleClients int // connections opened for the memory figure
	Dir         string
	Binary      string
	Timeout     time.Duration
	Out         io.Writer
}

// benchTarget is one place pgbench connects to.
type benchTarget struct {
	name string
	addr string // host:port
	pid  int    // process whose RSS is measured (0: none)
}

type pgbenchResult struct {
	tps, avgMS, p99MS float64
	failed            int
	lat               []float64 // per-transaction latencies in ms
	cpu               time.Duration
	txns              int
}

// merge combines rounds of equal length: mean tps, and average and p99 over all transactions.
func merge(rs []pgbenchResult) pgbenchResult {
	var out pgbenchResult
	var sum float64
	for _, r := range rs {
		out.tps += r.tps / float64(len(rs))
		out.failed += r.failed
		out.cpu += r.cpu
		out.txns += r.txns
		out.lat = append(out.lat, r.lat...)
	}
	if len(out.lat) == 0 {
		return out
	}
	for _, l := range out.lat {
		sum += l
	}
	slices.Sort(out.lat)
	out.avgMS = sum / float64(len(out.lat))
	out.p99MS = out.lat[min(len(out.lat)-1, int(float64(len(out.lat))*0.99))]
	return out
}

// Proxy compares pgbench through the pgvigil proxy with PgBouncer and with PostgreSQL
// directly, on one local primary, in one command: select-only and TPC-B-like, the same client
// count and duration for each, transaction pooling with the same pool size for both poolers.
// Then it opens idle clients on each pooler and reports resident memory per 1,000 of them.
func Proxy(ctx context.Context, o ProxyOptions) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-proxy-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
	}
	// #nosec G302 -- PostgreSQL and PgBouncer run as the postgres OS user and must traverse this directory to reach their own
	if err := os.Chmod(o.Dir, 0o755); err != nil {
		return err
	}
	bouncer, err := exec.LookPath("pgbouncer")
	if err != nil {
		return errors.New("pgbouncer is not installed (apt-get install -y pgbouncer); it is the baseline of this benchmark")
	}
	fmt.Fprintf(o.Out, "pgvigil bench proxy: pgbench, %d clients, 2 threads, %s per target and workload in %d interleaved rounds, scale %d;\n"+
		"transaction pooling, pool size %d for PgBouncer and the proxy; simple query protocol (PgBouncer 1.18 has no prepared statements in transaction mode)\n",
		o.Clients, o.Duration, max(1, o.Rounds), o.Scale, o.PoolSize)
	fmt.Fprintln(o.Out, "Note: this machine may be shared with other work while the benchmark runs; figures move between runs.")
	c, err := localcluster.Start(localcluster.Options{Dir: filepath.Join(o.Dir, "cluster"), Nodes: 1, Binary: o.Binary,
		MaxConnections: o.Clients + o.PoolSize*2 + 20})
	if err != nil {
		return err
	}
	defer c.Close()
	if !localcluster.Wait(ctx, o.Timeout, 100*time.Millisecond, func() bool { _, err := c.Primary(ctx); return err == nil }) {
		return fmt.Errorf("no primary within %s", o.Timeout)
	}
	pg := c.Nodes[0]
	if out, err := pgbench(ctx, o.Dir, "-i", "-q", "-s", strconv.Itoa(o.Scale), "-h", "127.0.0.1", "-p", strconv.Itoa(pg.PGPort), "-U", localcluster.Superuser, "postgres"); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	pb, err := startPgBouncer(ctx, bouncer, filepath.Join(o.Dir, "pgbouncer"), pg.PGPort, o.PoolSize)
	if err != nil {
		return err
	}
	defer pb.stop()
	px, err := c.StartProxy(ctx, filepath.Join(o.Dir, "proxy"), fmt.Sprintf("pool_mode: transaction\npool_size: %d\nmax_client_conn: 20000\n", o.PoolSize))
	if err != nil {
		return err
	}
	defer px.Stop()
	targets := []benchTarget{
		{"direct", fmt.Sprintf("127.0.0.1:%d", pg.PGPort), 0},
		{"pgbouncer", pb.addr, pb.cmd.Process.Pid},
		{"pgvigil", px.RW, px.PID()},
	}
	fmt.Fprintf(o.Out, "\n%-12s %-10s %10s %9s %9s %8s %12s %12s %9s\n", "workload", "target", "tps", "avg ms", "p99 ms", "failed", "tps/bouncer", "p99/bouncer", "cpu µs/tx")
	rounds := max(1, o.Rounds)
	per := max(time.Second, o.Duration/time.Duration(rounds))
	for _, wl := range []struct {
		name string
		args []string
	}{{"select-only", []string{"-S"}}, {"tpcb-like", nil}} {
		// Targets take turns, round after round, so that load from elsewhere on a shared
		// machine falls on all of them alike.
		runs := map[string][]pgbenchResult{}
		for r := 0; r < rounds; r++ {
			for _, tg := range targets {
				cpu0 := cpuTime(tg.pid)
				res, err := runPgbench(ctx, filepath.Join(o.Dir, "logs", wl.name+"-"+tg.name), tg.addr, o.Clients, per, wl.args)
				if err != nil {
					return fmt.Errorf("%s through %s: %w", wl.name, tg.name, err)
				}
				res.cpu = cpuTime(tg.pid) - cpu0
				res.txns = len(res.lat)
				runs[tg.name] = append(runs[tg.name], res)
			}
		}
		res := map[string]pgbenchResult{}
		for _, tg := range targets {
			r := merge(runs[tg.name])
			res[tg.name] = r
			ratioT, ratioP := "—", "—"
			if b, ok := res["pgbouncer"]; ok && tg.name != "pgbouncer" && b.tps > 0 && b.p99MS > 0 {
				ratioT, ratioP = fmt.Sprintf("%.2f×", r.tps/b.tps), fmt.Sprintf("%.2f×", r.p99MS/b.p99MS)
			}
			cpu := "—"
			if tg.pid != 0 && r.txns > 0 {
				cpu = fmt.Sprintf("%.1f", float64(r.cpu.Microseconds())/float64(r.txns))
			}
			fmt.Fprintf(o.Out, "%-12s %-10s %10.0f %9.2f %9.2f %8d %12s %12s %9s\n", wl.name, tg.name, r.tps, r.avgMS, r.p99MS, r.failed, ratioT, ratioP, cpu)
		}
	}
	fmt.Fprintln(o.Out, "\nratios: the proxy's figure over PgBouncer's (targets: tps ≥ 1.00×, p99 ≤ 1.00×)")

	fmt.Fprintf(o.Out, "\nmemory: RSS growth with %d idle, authenticated client connections (target ≤ 10 MB per 1,000 for the proxy)\n", o.IdleClients)
	for _, tg := range targets[1:] {
		per, err := idleRSS(ctx, tg, o.IdleClients)
		if err != nil {
			return fmt.Errorf("idle clients on %s: %w", tg.name, err)
		}
		fmt.Fprintf(o.Out, "%-10s %8.2f MB per 1,000 idle clients\n", tg.name, per)
	}
	return nil
}

func pgbench(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PGPASSWORD="+localcluster.SuperPass)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var (
	tpsRe    = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	avgRe    = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	failedRe = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

// runPgbench runs pgbench with per-transaction logging and computes p99 from the log.
func runPgbench(ctx context.Context, dir, addr string, clients int, d time.Duration, extra []string) (pgbenchResult, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return pgbenchResult{}, err
	}
	host, port, _ := strings.Cut(addr, ":")
	args := append([]string{"-n", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(max(1, int(d.Seconds()))), "-l",
		"-h", host, "-p", port, "-U", localcluster.Superuser}, extra...)
	out, err := pgbench(ctx, dir, append(args, "postgres")...)
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("%w\n%s", err, out)
	}
	var r pgbenchResult
	m := tpsRe.FindStringSubmatch(out)
	a := avgRe.FindStringSubmatch(out)
	if m == nil || a == nil {
		return r, fmt.Errorf("cannot read pgbench's output:\n%s", out)
	}
	r.tps, _ = strconv.ParseFloat(m[1], 64)
	r.avgMS, _ = strconv.ParseFloat(a[1], 64)
	if f := failedRe.FindStringSubmatch(out); f != nil {
		r.failed, _ = strconv.Atoi(f[1])
	}
	var lat []float64
	logs, _ := filepath.Glob(filepath.Join(dir, "pgbench_log.*"))
	for _, l := range logs {
		f, err := os.Open(l) // #nosec G304 -- a transaction log pgbench just wrote in the benchmark's scratch directory
		if err != nil {
			return r, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// client_id transaction_no time script_no time_epoch time_us; time is in µs.
			fs := strings.Fields(sc.Text())
			if len(fs) >= 3 {
				if us, err := strconv.ParseFloat(fs[2], 64); err == nil {
					lat = append(lat, us/1000)
				}
			}
		}
		_ = f.Close()    // read-only; the scan is done
		_ = os.Remove(l) // scratch file; the directory is removed with the benchmark's anyway
	}
	if len(lat) == 0 {
		return r, errors.New("pgbench wrote no transaction log")
	}
	r.lat = lat
	return r, nil
}

type pgBouncer struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startPgBouncer runs Debian's PgBouncer as the postgres OS user (it refuses root), in
// transaction mode with SCRAM from a userlist, in front of port.
func startPgBouncer(ctx context.Context, bin, dir string, port, poolSize int) (*pgBouncer, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	lp, err := localcluster.FreePort()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PgBouncer runs as the postgres OS user: %w", err)
	}
	// User and group ids are 32-bit on Linux; parsing them as such makes the conversions safe.
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("the postgres OS user's uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("the postgres OS user's gid %q: %w", u.Gid, err)
	}
	users := filepath.Join(dir, "userlist.txt")
	ini := filepath.Join(dir, "pgbouncer.ini")
	files := map[string]string{
		users: fmt.Sprintf("%q %q\n", localcluster.Superuser, localcluster.SuperPass),
		ini: fmt.Sprintf(`[databases]
postgres = host=127.0.0.1 port=%d dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 20000
ignore_startup_parameters = extra_float_digits
logfile = %s
log_connections = 0
log_disconnections = 0
`, port, lp, users, poolSize, filepath.Join(dir, "pgbouncer.log")),
	}
	for f, body := range files {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			return nil, err
		}
		if err := os.Chown(f, int(uid), int(gid)); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, ini) // #nosec G204 -- pgbouncer found on PATH, given the configuration file written just above
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("while starting pgbouncer: %w", err)
	}
	pb := &pgBouncer{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", lp), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(pb.done) }()
	if !localcluster.Wait(ctx, 20*time.Second, 100*time.Millisecond, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := pgconn.Connect(cctx, dsnFor(pb.addr))
		if err != nil {
			return false
		}
		_ = c.Close(cctx) // a probe connection; it connected, which is all that is asked
		return true
	}) {
		pb.stop()
		b, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log")) // #nosec G304 -- PgBouncer's log in the benchmark's scratch directory
		return nil, fmt.Errorf("pgbouncer did not accept connections within 20s; its log:\n%s", b)
	}
	return pb, nil
}

func (pb *pgBouncer) stop() {
	_ = pb.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pb.done:
	case <-time.After(10 * time.Second):
		_ = pb.cmd.Process.Kill()
		<-pb.done
	}
}

func dsnFor(addr string) string {
	host, port, _ := strings.Cut(addr, ":")
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10",
		host, port, localcluster.Superuser, localcluster.SuperPass)
}

// idleRSS opens n authenticated connections that then sit idle, and returns the process's
// RSS growth per 1,000 of them in MB.
func idleRSS(ctx context.Context, tg benchTarget, n int) (float64, error) {
	before, err := rssKB(tg.pid)
	if err != nil {
		return 0, err
	}
	conns := make([]*pgconn.PgConn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background()) // idle measurement connections; closing is best effort
		}
	}()
	for range n {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := pgconn.Connect(cctx, dsnFor(tg.addr))
		cancel()
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the process settle (and Go's GC run) with the clients idle
	after, err := rssKB(tg.pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / 1024 / float64(n) * 1000, nil
}

// cpuTime is the user+system CPU time a process has used (0 for pid 0 or when unreadable).
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // clock ticks: USER_HZ is 100 on Linux
}

func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS")
}
