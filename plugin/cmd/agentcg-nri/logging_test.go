package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentcg/agentcg/plugin"
	"github.com/containerd/nri/pkg/api"
)

// The journald handler sends one datagram per record in the native
// protocol: identifier, priority from the level, and the whole formatted
// line as a binary-safe MESSAGE; lines keep arriving after journald
// restarts (its socket is bound again at the same path).
func TestJournalHandler(t *testing.T) {
	dir, err := os.MkdirTemp("", "j")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	listen := func() *net.UnixConn {
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := listen()
	h, err := newJournalHandler(sock, func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) })
	if err != nil {
		t.Fatal(err)
	}
	defer h.conn.Close()
	log := slog.New(h).With("container", "c1")
	read := func(l *net.UnixConn) (head []byte, msg string) {
		t.Helper()
		b := make([]byte, 65536)
		n, err := l.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		d := b[:n]
		head, rest, ok := bytes.Cut(d, []byte("MESSAGE\n"))
		if !ok {
			t.Fatalf("datagram %q", d)
		}
		size := binary.LittleEndian.Uint64(rest[:8])
		return head, string(rest[8 : 8+size])
	}
	log.Warn("detach failed", "reason", "x\ny")
	head, msg := read(l)
	if !bytes.Contains(head, []byte("SYSLOG_IDENTIFIER=agentcg-nri\n")) || !bytes.Contains(head, []byte("PRIORITY=4\n")) {
		t.Fatalf("header %q", head)
	}
	if !strings.Contains(msg, `msg="detach failed"`) || !strings.Contains(msg, "container=c1") || !strings.Contains(msg, `reason="x\ny"`) {
		t.Fatalf("message %q", msg)
	}
	// journald restarts: its socket is removed and bound again.
	l.Close()
	os.Remove(sock)
	l = listen()
	defer l.Close()
	log.Info("after restart")
	if _, msg := read(l); !strings.Contains(msg, `msg="after restart"`) {
		t.Fatalf("message after a journald restart %q", msg)
	}
}

func TestNewLogger(t *testing.T) {
	if _, _, err := newLogger("xml", outStderr, slog.LevelInfo); err == nil || !strings.Contains(err.Error(), "text, json") {
		t.Fatalf("bad format: %v", err)
	}
	file := filepath.Join(t.TempDir(), "sub", "nri.log")
	log, closeLog, err := newLogger("json", file, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", "k", 1)
	closeLog()
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), `"msg":"hello"`) {
		t.Fatalf("file log %q", b)
	}
	// Pre-installed without journald: auto picks the default file, which
	// this test cannot write; only check that auto is not stderr then.
	t.Setenv(api.PluginSocketEnvVar, "3")
	if !plugin.Preinstalled() {
		t.Fatal("Preinstalled() is false with the socket variable set")
	}
}

func TestBlockWhileExists(t *testing.T) {
	file := filepath.Join(t.TempDir(), "block")
	hook := blockWhileExists(file, slog.New(slog.DiscardHandler))
	if err := hook(context.Background(), "c", "/x"); err != nil {
		t.Fatalf("no file: %v", err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := hook(ctx, "c", "/x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked with an ended context: %v", err)
	}
}
