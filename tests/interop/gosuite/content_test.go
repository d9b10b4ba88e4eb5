// Package gosuite runs containerd 1.6's content conformance suite
// (github.com/containerd/containerd/content/testsuite) against a daemon over
// gRPC, through the same Go client containerd uses for a proxy content
// plugin (content/proxy.NewContentStore).
//
// The daemon is named by two environment variables:
//
//	CTRD_GOSUITE_ADDRESS  path of the daemon's gRPC unix socket (required)
//	CTRD_GOSUITE_POLICY   its content sharing policy: "shared" or "isolated"
//
// Every test of the suite gets namespaces of its own (a run token, the test's
// number and the wrapper's call count make the name), each with a lease
// created through the Leases service, so the daemon's collector never takes
// what a test is still writing. After a test its leases are deleted, its
// ingests aborted, its blobs deleted and its namespaces removed.
//
// tests/interop/test_go_content_suite.py builds this in GOPATH mode against
// Debian's Go sources (golang-github-containerd-containerd-dev) and runs it.
package gosuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/containerd/containerd/content"
	contentproxy "github.com/containerd/containerd/content/proxy"
	"github.com/containerd/containerd/content/testsuite"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/namespaces"
	"google.golang.org/grpc"
)

const (
	addressEnv = "CTRD_GOSUITE_ADDRESS"
	policyEnv  = "CTRD_GOSUITE_POLICY"

	// how long one gRPC call of the set-up or clean-up may take
	callTimeout = 30 * time.Second
	// the leases protect a test's data for at least this long
	leaseLifetime = time.Hour
	// tries of an Abort in the clean-up (5 ms, doubling, between them)
	abortAttempts = 6
)

// testSeq numbers the tests of one run (one store per test, as the suite asks).
var testSeq uint64

// daemon is the connection shared by all tests, with the clients the
// harness itself needs.
type daemon struct {
	conn       *grpc.ClientConn
	store      content.Store
	leases     leases.Manager
	namespaces namespacesapi.NamespacesClient
	run        string
}

func dial(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	unixDialer := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	conn, err := grpc.DialContext(ctx, "passthrough:///"+path,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(unixDialer),
	)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return conn
}

// testStore is what one test of the suite gets: the shared store, a wrapper
// handing out leased namespaces, and the record of what to clean up.
type testStore struct {
	d      *daemon
	prefix string

	mu     sync.Mutex
	made   []string
	leases map[string]leases.Lease
}

// wrap is the suite's ContextWrapper: a new namespace with a new lease on it.
// The returned release deletes that lease; the namespace's data is removed
// by cleanup once the test is over.
func (s *testStore) wrap(ctx context.Context) (context.Context, func(context.Context) error, error) {
	s.mu.Lock()
	ns := fmt.Sprintf("%s-n%d", s.prefix, len(s.made)+1)
	s.made = append(s.made, ns)
	s.mu.Unlock()

	nsCtx := namespaces.WithNamespace(context.Background(), ns)
	cctx, cancel := context.WithTimeout(nsCtx, callTimeout)
	defer cancel()
	l, err := s.d.leases.Create(cctx, leases.WithRandomID(), leases.WithExpiration(leaseLifetime))
	if err != nil {
		return nil, nil, fmt.Errorf("create a lease in %s: %w", ns, err)
	}
	s.mu.Lock()
	s.leases[ns] = l
	s.mu.Unlock()

	release := func(context.Context) error {
		s.mu.Lock()
		held, ok := s.leases[ns]
		delete(s.leases, ns)
		s.mu.Unlock()
		if !ok {
			return nil
		}
		dctx, cancel := context.WithTimeout(nsCtx, callTimeout)
		defer cancel()
		if err := s.d.leases.Delete(dctx, held); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete lease %s in %s: %w", held.ID, ns, err)
		}
		return nil
	}
	return leases.WithLease(namespaces.WithNamespace(ctx, ns), l.ID), release, nil
}

// cleanup removes everything the test left in its namespaces, then the
// namespaces themselves.
func (s *testStore) cleanup() error {
	s.mu.Lock()
	made := append([]string(nil), s.made...)
	left := make([]leases.Lease, 0, len(s.leases))
	leftNS := make([]string, 0, len(s.leases))
	for ns, l := range s.leases {
		left = append(left, l)
		leftNS = append(leftNS, ns)
	}
	s.leases = map[string]leases.Lease{}
	s.mu.Unlock()

	var problems []string
	for i, l := range left {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), leftNS[i]), callTimeout)
		if err := s.d.leases.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			problems = append(problems, fmt.Sprintf("delete lease %s in %s: %v", l.ID, leftNS[i], err))
		}
		cancel()
	}
	for _, ns := range made {
		if err := s.empty(ns); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("clean-up: %s", strings.Join(problems, "; "))
	}
	return nil
}

// empty aborts the ingests and deletes the blobs of ns, then ns itself.
func (s *testStore) empty(ns string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), callTimeout)
	defer cancel()
	statuses, err := s.d.store.ListStatuses(ctx)
	if err != nil {
		return fmt.Errorf("list ingests of %s: %w", ns, err)
	}
	for _, st := range statuses {
		if err := s.abort(ctx, st.Ref); err != nil {
			return fmt.Errorf("abort %s in %s: %w", st.Ref, ns, err)
		}
	}
	var blobs []content.Info
	if err := s.d.store.Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info)
		return nil
	}); err != nil {
		return fmt.Errorf("list blobs of %s: %w", ns, err)
	}
	for _, info := range blobs {
		if err := s.d.store.Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete %s in %s: %w", info.Digest, ns, err)
		}
	}
	_, err = s.d.namespaces.Delete(ctx, &namespacesapi.DeleteNamespaceRequest{Name: ns})
	if err != nil {
		if err = errdefs.FromGRPC(err); !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", ns, err)
		}
	}
	return nil
}

// abort drops the ingest ref, trying a few times: the test may have
// half-closed its writer just before, and the daemon may still be closing it
// (containerd's Abort does not wait for that and can fail with "directory not
// empty" while the writer records its last update in the ingest).
func (s *testStore) abort(ctx context.Context, ref string) error {
	delay := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.d.store.Abort(ctx, ref)
		if err == nil || errdefs.IsNotFound(err) {
			return nil
		}
		if attempt == abortAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// init is the suite's StoreInitFn: one testStore per test; the root
// directory the suite makes is not used (the daemon has its own).
func (d *daemon) init(ctx context.Context, _ string) (context.Context, content.Store, func() error, error) {
	s := &testStore{
		d:      d,
		prefix: fmt.Sprintf("%s-%s-t%d", testsuite.Name(ctx), d.run, atomic.AddUint64(&testSeq, 1)),
		leases: map[string]leases.Lease{},
	}
	return testsuite.SetContextWrapper(ctx, s.wrap), d.store, s.cleanup, nil
}

func TestContentSuite(t *testing.T) {
	path := os.Getenv(addressEnv)
	if path == "" {
		t.Fatalf("%s must name the daemon's gRPC unix socket", addressEnv)
	}
	policy := os.Getenv(policyEnv)
	if policy != "shared" && policy != "isolated" {
		t.Fatalf("%s must be shared or isolated, got %q", policyEnv, policy)
	}

	conn := dial(t, path)
	defer conn.Close()
	d := &daemon{
		conn:       conn,
		store:      contentproxy.NewContentStore(contentapi.NewContentClient(conn)),
		leases:     leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn)),
		namespaces: namespacesapi.NewNamespacesClient(conn),
		run:        fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff),
	}

	testsuite.ContentSuite(t, "gosuite", d.init)
	if policy == "shared" {
		testsuite.ContentCrossNSSharedSuite(t, "gosuite", d.init)
	} else {
		testsuite.ContentCrossNSIsolatedSuite(t, "gosuite", d.init)
	}
}
