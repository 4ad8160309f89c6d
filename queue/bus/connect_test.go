package bus_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

func TestConnectOptionErrors(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed")
	if err := os.WriteFile(seed, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		opts bus.ConnectOptions
		want string
	}{
		"missing creds":       {bus.ConnectOptions{CredsFile: filepath.Join(dir, "none.creds")}, "CredsFile"},
		"missing seed":        {bus.ConnectOptions{NKeySeedFile: filepath.Join(dir, "none")}, "NKeySeedFile"},
		"bad seed":            {bus.ConnectOptions{NKeySeedFile: seed}, "NKeySeedFile"},
		"two auth methods":    {bus.ConnectOptions{Token: "t", NKeySeedFile: seed}, "only one"},
		"cert without key":    {bus.ConnectOptions{TLSCertFile: seed}, "go together"},
		"missing CA":          {bus.ConnectOptions{TLSCAFile: filepath.Join(dir, "ca.pem")}, "TLSCAFile"},
		"missing client cert": {bus.ConnectOptions{TLSCertFile: filepath.Join(dir, "c.pem"), TLSKeyFile: seed}, "TLSCertFile"},
	}
	for name, c := range cases {
		_, err := bus.Connect("nats://127.0.0.1:1", c.opts)
		if !errors.Is(err, bus.ErrConnect) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want bus.ErrConnect naming %s", name, err, c.want)
		}
	}
	// Nothing listens: a clear error, not a hang.
	if _, err := bus.Connect("nats://127.0.0.1:1", bus.ConnectOptions{}); !errors.Is(err, bus.ErrConnect) {
		t.Errorf("no server: %v", err)
	}
}

// TestConnectWithNKeyAndMutualTLS connects the way a node joins an
// external cluster: NKey authentication over TLS with a client
// certificate, and uses JetStream through it.
func TestConnectWithNKeyAndMutualTLS(t *testing.T) {
	testutil.LeakCheck(t)
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	e := testutil.StartNATS(t, bus.EmbeddedConfig{Configure: func(o *server.Options) {
		o.Authorization = "" // NKey users instead of the token
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 2
		o.TLSConfig = pki.serverTLS
	}})
	if !strings.HasPrefix(e.ClientURL(), "tls://") {
		t.Fatalf("ClientURL %s", e.ClientURL())
	}
	nc, err := bus.Connect(e.ClientURL(), bus.ConnectOptions{
		Name: "external", NKeySeedFile: seedFile,
		TLSCAFile: pki.caFile, TLSCertFile: pki.clientCert, TLSKeyFile: pki.clientKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("JetStream: %v", err)
	}
	// Without the client certificate the server refuses.
	if nc, err := bus.Connect(e.ClientURL(), bus.ConnectOptions{NKeySeedFile: seedFile, TLSCAFile: pki.caFile}); err == nil {
		nc.Close()
		t.Fatal("connected without a client certificate")
	}
}

type testPKI struct {
	caFile, clientCert, clientKey string
	serverTLS                     *tls.Config
}

// newTestPKI makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA.
func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "prism test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "prism test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	srvDER, srvKey := leaf(2, x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := leaf(3, x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		caFile:     write("ca.pem", "CERTIFICATE", caDER),
		clientCert: write("client.pem", "CERTIFICATE", cliDER),
		clientKey:  write("client-key.pem", "EC PRIVATE KEY", keyDER(cliKey)),
		serverTLS: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}},
			ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		},
	}
}
