// kube-testenv runs a real kube-apiserver (in-process, from k8s.io/kubernetes)
// on top of an embedded etcd, both bound to 127.0.0.1, for integration tests.
//
//	kube-testenv [--dir DIR] [--port N] [--timeout 2m] [--verbose]
//
// Once /readyz answers 200 it prints one line on stdout:
//
//	READY https://127.0.0.1:PORT DIR/kubeconfig
//
// DIR/kubeconfig authenticates as an admin (O=system:masters); DIR/ca.crt is
// the CA of the serving certificate. SIGTERM or SIGINT stops everything,
// removes the temporary directories and exits 0. Logs go to stderr.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	goflag "flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

const issuer = "https://kubernetes.default.svc.cluster.local"

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kube-testenv: "+format+"\n", args...)
}

func main() {
	os.Exit(run())
}

func run() int {
	dir := goflag.String("dir", "", "where to write kubeconfig and ca.crt (default: a temporary directory)")
	port := goflag.Int("port", 0, "kube-apiserver secure port on 127.0.0.1 (0: pick a free one)")
	timeout := goflag.Duration("timeout", 2*time.Minute, "how long to wait for /readyz")
	verbose := goflag.Bool("verbose", false, "log kube-apiserver and etcd at info level (default: errors only)")
	goflag.Parse()
	quietKlog(*verbose)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	work, err := os.MkdirTemp("", "kube-testenv-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	outDir := *dir
	if outDir == "" {
		outDir = work
	} else if err := os.MkdirAll(outDir, 0o755); err != nil {
		logf("%v", err)
		return 1
	}

	creds, err := newPKI()
	if err != nil {
		logf("generating certificates: %v", err)
		return 1
	}
	pkiDir := filepath.Join(work, "pki")
	if err := os.Mkdir(pkiDir, 0o700); err != nil {
		logf("%v", err)
		return 1
	}
	files, err := creds.write(pkiDir)
	if err != nil {
		logf("writing certificates: %v", err)
		return 1
	}

	etcdLevel := zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	if *verbose {
		etcdLevel.SetLevel(zapcore.InfoLevel)
	}
	etcd, err := startEtcd(filepath.Join(work, "etcd"), etcdLevel)
	if err != nil {
		logf("starting etcd: %v", err)
		return 1
	}
	defer func() {
		etcdLevel.SetLevel(zapcore.FatalLevel) // closing listeners logs errors
		etcd.Close()
	}()
	etcdURL := etcd.Clients[0].Addr().String()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		logf("listening for kube-apiserver: %v", err)
		return 1
	}
	apiPort := ln.Addr().(*net.TCPAddr).Port
	serverURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)

	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--etcd-servers=http://" + etcdURL,
		"--tls-cert-file=" + files["serving.crt"],
		"--tls-private-key-file=" + files["serving.key"],
		"--client-ca-file=" + files["client-ca.crt"],
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + issuer,
		"--api-audiences=" + issuer,
		"--service-account-key-file=" + files["sa.pub"],
		"--service-account-signing-key-file=" + files["sa.key"],
		"--service-account-max-token-expiration=24h",
		"--service-account-extend-token-expiration=false",
		"--service-cluster-ip-range=10.0.0.0/24",
		// No controller-manager runs, and 127.0.0.1 is not a valid endpoint
		// address: do not maintain the endpoints of the kubernetes service.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}

	apiCtx, cancelAPI := context.WithCancel(context.Background())
	defer cancelAPI()
	var apiErr error // valid once apiDone is closed
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		apiErr = runAPIServer(apiCtx, args, ln)
	}()

	waitAPI := func() {
		cancelAPI()
		select {
		case <-apiDone:
			if apiErr != nil {
				logf("kube-apiserver stopped: %v", apiErr)
			}
		case <-time.After(30 * time.Second):
			logf("kube-apiserver did not stop within 30s")
		}
	}

	if err := waitReady(ctx, serverURL, creds, *timeout, apiDone); err != nil {
		logf("%v", err)
		waitAPI()
		if ctx.Err() != nil {
			return 0 // stopped by a signal before we were ready
		}
		return 1
	}

	kubeconfig := filepath.Join(outDir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, serverURL, creds); err != nil {
		logf("writing kubeconfig: %v", err)
		waitAPI()
		return 1
	}
	if err := os.WriteFile(filepath.Join(outDir, "ca.crt"), creds.servingCA.certPEM, 0o644); err != nil {
		logf("writing ca.crt: %v", err)
		waitAPI()
		return 1
	}

	fmt.Printf("READY %s %s\n", serverURL, kubeconfig)
	os.Stdout.Sync()

	select {
	case <-ctx.Done():
		logf("signal received, stopping")
		waitAPI()
		return 0
	case <-apiDone:
		logf("kube-apiserver exited unexpectedly: %v", apiErr)
		return 1
	case err := <-etcd.Err():
		logf("etcd failed: %v", err)
		waitAPI()
		return 1
	}
}

// quietKlog sends only errors of kube-apiserver (and grpc) to stderr.
func quietKlog(verbose bool) {
	fs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(fs)
	threshold := "ERROR"
	if verbose {
		threshold = "INFO"
	}
	for name, value := range map[string]string{
		"v":                                "0",
		"logtostderr":                      "true",
		"legacy_stderr_threshold_behavior": "false",
		"stderrthreshold":                  threshold,
	} {
		if err := fs.Set(name, value); err != nil {
			logf("klog flag %s: %v", name, err)
		}
	}
}

// startEtcd runs a single-member etcd on free 127.0.0.1 ports.
func startEtcd(dataDir string, level zap.AtomicLevel) (*embed.Etcd, error) {
	logCfg := zap.NewProductionConfig()
	logCfg.Level = level
	logCfg.Sampling = nil
	logger, err := logCfg.Build()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Name = "kube-testenv"
		cfg.Dir = dataDir
		cfg.UnsafeNoFsync = true
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger.Named("etcd"))
		clientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[0])}
		peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err // most likely a port taken in between; try others
			os.RemoveAll(dataDir)
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, nil
		case <-time.After(60 * time.Second):
			e.Close()
			return nil, errors.New("etcd did not become ready within 60s")
		}
	}
	return nil, lastErr
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// runAPIServer does what `kube-apiserver ARGS` does, but stops when ctx is
// cancelled instead of installing its own signal handlers.
func runAPIServer(ctx context.Context, args []string, ln net.Listener) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	s.SecureServing.Listener = ln
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return app.Run(ctx, completed)
}

// waitReady polls /readyz as the admin until it answers 200.
func waitReady(ctx context.Context, serverURL string, creds *pki, timeout time.Duration, apiDone <-chan struct{}) error {
	roots := x509.NewCertPool()
	roots.AddCert(creds.servingCA.cert)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots,
			Certificates: []tls.Certificate{{
				Certificate: [][]byte{creds.admin.cert.Raw},
				PrivateKey:  creds.admin.key,
			}},
		}},
	}
	defer client.CloseIdleConnections()
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(serverURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("signal received before kube-apiserver was ready")
		case <-apiDone:
			return errors.New("kube-apiserver exited before it was ready")
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after %s", timeout)
		case <-tick.C:
		}
	}
}

func writeKubeconfig(path, serverURL string, creds *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kube-testenv"] = &clientcmdapi.Cluster{
		Server:                   serverURL,
		CertificateAuthorityData: creds.servingCA.certPEM,
	}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: creds.admin.certPEM,
		ClientKeyData:         creds.admin.keyPEM,
	}
	cfg.Contexts["admin"] = &clientcmdapi.Context{Cluster: "kube-testenv", AuthInfo: "admin"}
	cfg.CurrentContext = "admin"
	return clientcmd.WriteToFile(*cfg, path)
}
