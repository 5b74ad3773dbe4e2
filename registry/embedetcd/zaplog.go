package embedetcd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// harmless lists fragments of etcd's "setting up serving from embedded etcd
// failed" error logs that are expected when the server is stopped (its
// listeners closing under the cmux, gRPC and HTTP servers) and say nothing
// wrong.
var harmless = []string{
	"mux: server closed",
	"use of closed network connection",
	"http: Server closed",
	"grpc: the server has been stopped",
}

// slogCore is a zapcore.Core that forwards etcd's error-level logs to slog,
// dropping the harmless shutdown noise.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

// newZapLogger returns the logger etcd is given: error level and above, to
// log.
func newZapLogger(log *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{log: log.With("component", "etcd")})
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.ErrorLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	text := e.Message
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		s := fmt.Sprint(v)
		text += " " + s
		attrs = append(attrs, k, s)
	}
	if strings.Contains(e.Message, "serving") {
		for _, h := range harmless {
			if strings.Contains(text, h) {
				return nil
			}
		}
	}
	c.log.Log(context.Background(), slog.LevelError, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
