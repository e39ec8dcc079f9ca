package manager

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/manager/config"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HA() {
		t.Fatal("standalone must be the default")
	}
	// Every setting is documented: it has a YAML key and help text.
	typ := reflect.TypeOf(cfg)
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.Tag.Get("yaml") == "" || f.Tag.Get("help") == "" {
			t.Errorf("Config.%s lacks a yaml key or help text", f.Name)
		}
	}
}

func TestConfigFile(t *testing.T) {
	cfg := DefaultConfig()
	doc := "listen: 127.0.0.1:9000\netcd-endpoints: [a:2379, b:2379]\nreserve: 10GiB\nworker-timeout: 20s\n"
	if err := config.DecodeYAML("manager.yaml", []byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" || len(cfg.EtcdEndpoints) != 2 || cfg.ReserveBytes != 10<<30 || cfg.WorkerTimeout != 20*time.Second || !cfg.HA() {
		t.Fatalf("%+v", cfg)
	}
	err := config.DecodeYAML("manager.yaml", []byte("listen: :1\nworker-heartbeat: 1s\netcd: [x]\n"), &cfg)
	if err == nil || !strings.Contains(err.Error(), `"worker-heartbeat" (line 2)`) || !strings.Contains(err.Error(), `"etcd" (line 3)`) {
		t.Fatalf("unknown keys: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.WorkerTimeout = c.WorkerHeartbeatInterval }, "worker-timeout"},
		{func(c *Config) { c.Placement = "random" }, "unknown placement strategy"},
		{func(c *Config) { c.Listen = "nope" }, "listen"},
		{func(c *Config) { c.EtcdEndpoints = []string{"x:1"}; c.EtcdSessionTTL = time.Second }, "etcd-session-ttl"},
		{func(c *Config) { c.ClusterID = "a/b" }, "cluster-id"},
		{func(c *Config) { c.LogLevel = "loud" }, "log-level"},
		{func(c *Config) { c.MaxMessageBytes = 1 }, "max-message-size"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %q, got %v", tc.want, err)
		}
	}
}
