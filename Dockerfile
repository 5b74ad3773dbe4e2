# Multi-stage build of one rtcedge binary, for users with registry access:
#   docker build --build-arg CMD=signaling -t rtcedge/signaling:dev .
# CMD is one of signaling, mediarelay, demo-origin, rtcedge.
# Offline machines use Dockerfile.scratch with the binaries `make build` makes.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG CMD=signaling
RUN CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o /out/app ./cmd/${CMD}

FROM scratch
COPY --from=build /out/app /app
USER 65534:65534
ENTRYPOINT ["/app"]
