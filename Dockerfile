# Multi-stage build of ami-bridge: a static binary on a distroless base.
#
#   docker build -t ami-bridge --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm -v $PWD/config.yaml:/etc/ami-bridge/config.yaml:ro \
#     -e AMI_BRIDGE_NATS__URL=nats://nats:4222 -e PBX1_SECRET=... ami-bridge

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ami-bridge ./cmd/ami-bridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ami-bridge /usr/local/bin/ami-bridge
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/ami-bridge"]
CMD ["run", "--config", "/etc/ami-bridge/config.yaml"]
