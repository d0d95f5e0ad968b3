package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentcg/agentcg/plugin"
)

// Log outputs.
const (
	outAuto     = "auto"
	outStderr   = "stderr"
	outJournald = "journald"
	// defaultLogFile is used when pre-installed and journald is absent.
	defaultLogFile = "/var/log/agentcg/agentcg-nri.log"
	journalSocket  = "/run/systemd/journal/socket"
)

// newLogger builds the logger for --log-format and --log-output. auto
// means stderr, except when pre-installed (containerd discards a
// pre-installed plugin's output): then journald if it runs, else
// defaultLogFile. It returns a closer for the output.
func newLogger(format, output string, level slog.Level) (*slog.Logger, func() error, error) {
	if format != "text" && format != "json" {
		return nil, nil, fmt.Errorf("--log-format %q: allowed values are text, json", format)
	}
	if output == outAuto {
		output = outStderr
		if plugin.Preinstalled() {
			output = defaultLogFile
			if _, err := os.Stat(journalSocket); err == nil {
				output = outJournald
			}
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	mk := func(w io.Writer) slog.Handler {
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	switch output {
	case outStderr:
		return slog.New(mk(os.Stderr)), func() error { return nil }, nil
	case outJournald:
		h, err := newJournalHandler(journalSocket, mk)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-output journald: %w", err)
		}
		return slog.New(h), h.conn.Close, nil
	}
	if err := os.MkdirAll(filepath.Dir(output), 0o750); err != nil {
		return nil, nil, fmt.Errorf("--log-output %s: %w", output, err)
	}
	f, err := os.OpenFile(output, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-output %s: %w", output, err)
	}
	return slog.New(mk(f)), f.Close, nil
}

// journalHandler formats each record with a text or JSON handler and sends
// the line as MESSAGE over journald's native protocol, with the record's
// level as PRIORITY, so `journalctl -t agentcg-nri` shows what stderr would.
// The socket is not connected: each datagram is addressed to the journal's
// path, so lines keep arriving after journald restarts (a connected socket
// stays refused once its peer is gone).
type journalHandler struct {
	mu   *sync.Mutex // shared by the handlers derived with With*
	buf  *bytes.Buffer
	fmt  slog.Handler // writes into buf
	conn *net.UnixConn
	addr *net.UnixAddr
}

// newJournalHandler checks that journald listens on socket and returns a
// handler that formats with mk.
func newJournalHandler(socket string, mk func(io.Writer) slog.Handler) (*journalHandler, error) {
	probe, err := net.Dial("unixgram", socket) // is journald there?
	if err != nil {
		return nil, err
	}
	probe.Close()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // autobind: an unnamed sender
	if err != nil {
		return nil, fmt.Errorf("journal socket: %w", err)
	}
	buf := &bytes.Buffer{}
	return &journalHandler{mu: &sync.Mutex{}, buf: buf, fmt: mk(buf), conn: conn, addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// journalWriteTimeout drops a line that a stuck journald does not take,
// rather than blocking the caller (a queue of container work).
const journalWriteTimeout = time.Second

// maxJournalMessage keeps one datagram well under journald's limit; lines
// are short anyway (untrusted values are truncated before logging).
const maxJournalMessage = 48 << 10

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.fmt.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.fmt.Handle(ctx, r); err != nil {
		return err
	}
	msg := bytes.TrimRight(h.buf.Bytes(), "\n")
	if len(msg) > maxJournalMessage {
		msg = msg[:maxJournalMessage]
	}
	var d bytes.Buffer
	fmt.Fprintf(&d, "SYSLOG_IDENTIFIER=agentcg-nri\nPRIORITY=%d\nMESSAGE\n", syslogPriority(r.Level))
	binary.Write(&d, binary.LittleEndian, uint64(len(msg)))
	d.Write(msg)
	d.WriteByte('\n')
	h.conn.SetWriteDeadline(time.Now().Add(journalWriteTimeout))
	_, _, err := h.conn.WriteMsgUnix(d.Bytes(), nil, h.addr)
	return err
}

func (h *journalHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &journalHandler{mu: h.mu, buf: h.buf, fmt: h.fmt.WithAttrs(a), conn: h.conn, addr: h.addr}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{mu: h.mu, buf: h.buf, fmt: h.fmt.WithGroup(name), conn: h.conn, addr: h.addr}
}

func syslogPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// nriLogger routes the NRI stub's own log lines into our logger (its
// default, logrus on stderr, is lost when pre-installed).
type nriLogger struct{ log *slog.Logger }

func (l nriLogger) Debugf(ctx context.Context, f string, a ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(f, a...))
}
func (l nriLogger) Infof(ctx context.Context, f string, a ...any) {
	l.log.InfoContext(ctx, fmt.Sprintf(f, a...))
}
func (l nriLogger) Warnf(ctx context.Context, f string, a ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(f, a...))
}
func (l nriLogger) Errorf(ctx context.Context, f string, a ...any) {
	l.log.ErrorContext(ctx, fmt.Sprintf(f, a...))
}
