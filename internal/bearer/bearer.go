// Package bearer guards rtcedge's control APIs (the relay's admin API,
// origin registration) with a shared bearer token, or, without one, with
// the rule that only the local host may call them.
//
// A Policy says who may call: with a Token, every call must carry
// "Authorization: Bearer <token>" (gRPC metadata "authorization"); without
// one, only loopback peers (or peers the TLS layer already verified with a
// client certificate), unless Insecure opens the API to everyone, which a
// binary says loudly at start.
package bearer

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Errors of Policy.Allow.
var (
	// ErrUnauthenticated: a token is required and the call has none, or a
	// wrong one.
	ErrUnauthenticated = errors.New("a valid bearer token is required")
	// ErrForbidden: no token is configured and the caller is not on this
	// host.
	ErrForbidden = errors.New("only callers on this host may use this API")
)

// Policy is who may call a control API.
type Policy struct {
	// Token, when set, must be presented by every call.
	Token string
	// VerifiedTLS allows, without a Token, callers that presented a client
	// certificate the transport verified (mTLS). It is checked on each call
	// (the gRPC peer's TLS state, the HTTP request's), so a listener without
	// client-certificate verification opens nothing through it.
	VerifiedTLS bool
	// Insecure allows every caller when no Token is set.
	Insecure bool
	// Hint is added to refusals: which flags open the API.
	Hint string
}

// Allow decides on a call with Authorization header value authz from peer
// addr (nil when unknown); certified says the caller presented a client
// certificate the transport verified.
func (p Policy) Allow(authz string, addr net.Addr, certified bool) error {
	if p.Token != "" {
		if Check(authz, p.Token) {
			return nil
		}
		return ErrUnauthenticated
	}
	if p.Insecure || p.VerifiedTLS && certified || IsLoopback(addr) {
		return nil
	}
	return ErrForbidden
}

// Check reports whether authz is "Bearer <token>", in constant time.
func Check(authz, token string) bool {
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(token)) == 1
}

// IsLoopback reports whether addr is a loopback address (127.0.0.0/8, ::1)
// or a Unix socket.
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ok && ip.Unmap().IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// IsLoopbackListen reports whether a listen address ("host:port") binds
// loopback only: "127.0.0.1:9090", "[::1]:9090", "localhost:9090". ":9090"
// and "0.0.0.0:9090" bind every interface.
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// message is a refusal with the policy's hint.
func (p Policy) message(err error) string {
	if p.Hint == "" {
		return err.Error()
	}
	return err.Error() + " (" + p.Hint + ")"
}

// Middleware wraps next: a refused request gets 401 with WWW-Authenticate
// or 403, as application/problem+json.
func (p Policy) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var addr net.Addr
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = net.TCPAddrFromAddrPort(ap)
		}
		certified := r.TLS != nil && len(r.TLS.VerifiedChains) > 0
		err := p.Allow(r.Header.Get("Authorization"), addr, certified)
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		code := http.StatusForbidden
		if errors.Is(err, ErrUnauthenticated) {
			code = http.StatusUnauthorized
			w.Header().Set("WWW-Authenticate", `Bearer realm="rtcedge"`)
		}
		body, _ := json.Marshal(struct {
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}{http.StatusText(code), code, p.message(err)})
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(code)
		_, _ = w.Write(append(body, '\n'))
	})
}

// Caller describes a gRPC call's caller for Allow: its "authorization"
// metadata, its address, and whether it presented a client certificate
// the transport verified.
func Caller(ctx context.Context) (authz string, addr net.Addr, certified bool) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authz = v[0]
		}
	}
	if pr, ok := peer.FromContext(ctx); ok {
		addr = pr.Addr
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
			certified = len(ti.State.VerifiedChains) > 0
		}
	}
	return authz, addr, certified
}

// allowContext applies the policy to a gRPC call.
func (p Policy) allowContext(ctx context.Context) error {
	err := p.Allow(Caller(ctx))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, p.message(err))
	}
	return status.Error(codes.PermissionDenied, p.message(err))
}

// guarded reports whether a gRPC method is subject to the policy: the
// health service stays open for probes.
func guarded(method string) bool { return !strings.HasPrefix(method, "/grpc.health.v1.Health/") }

// UnaryInterceptor applies the policy to unary calls.
func (p Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if guarded(info.FullMethod) {
			if err := p.allowContext(ctx); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
}

// StreamInterceptor applies the policy to streaming calls (reflection
// included).
func (p Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if guarded(info.FullMethod) {
			if err := p.allowContext(ss.Context()); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
}

// ServerOptions returns the interceptors of the policy.
func (p Policy) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(p.UnaryInterceptor()), grpc.ChainStreamInterceptor(p.StreamInterceptor())}
}

// Token is a gRPC per-RPC credential that sends "authorization: Bearer
// <token>". It works over plaintext too (inside a private network); the
// token then travels in clear.
type Token string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t Token) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Token) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = Token("")
