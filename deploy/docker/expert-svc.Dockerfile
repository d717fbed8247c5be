# syntax=docker/dockerfile:1
# expert-svc image, multi-stage: a build stage compiles the binary from the repository with the
# project's Debian packages; the runtime stage holds the binary, the shared libraries it links
# (copied from the build stage, minus glibc, the C++ runtime and CUDA's own libraries) and the
# bundled tiny models. Build from the repository root:
#   docker build -f deploy/docker/expert-svc.Dockerfile -t expertmesh/expert-svc:dev .
# GPU variant (CUDA runtime base image; Ubuntu 24.04's glibc is newer than Debian 12's, so the
# same build runs there, as on the project's GPU machines):
#   docker build -f deploy/docker/expert-svc.Dockerfile -t expertmesh/expert-svc:0.1-cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 --build-arg CUDA=ON .
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG CUDA=OFF
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      prometheus-cpp-dev libcivetweb-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the service build needs (no tests, benchmarks or build trees).
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY engine/ engine/
COPY proto/ proto/
COPY attention-svc/ attention-svc/
COPY expert-svc/ expert-svc/
COPY router-svc/ router-svc/
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEXPERTMESH_CUDA=${CUDA} \
      -DEXPERTMESH_BUILD_TESTS=OFF -DEXPERTMESH_FUZZ=OFF \
    && cmake --build /build --target expert-svc
# The binary and its shared libraries, except those every runtime image has (glibc, libstdc++,
# libgcc) and CUDA's (the CUDA runtime image and the node's driver provide them).
RUN mkdir -p /out/bin /out/lib && cp /build/bin/expert-svc /out/bin/ \
    && ldd /build/bin/expert-svc | awk '/=> \// {print $3}' \
       | grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas[^/]*|libcublasLt|libnvidia[^/]*)\.so' \
       | xargs -r cp -L -t /out/lib/

FROM ${RUNTIME_IMAGE}
RUN (getent group 10001 || groupadd -g 10001 expertmesh) && (getent passwd 10001 || useradd -u 10001 -g 10001 -M -s /usr/sbin/nologin expertmesh)
COPY --from=build /out/ /opt/expertmesh/
COPY models/ /opt/expertmesh/models/
ENV LD_LIBRARY_PATH=/opt/expertmesh/lib PATH=/opt/expertmesh/bin:$PATH
USER 10001
EXPOSE 50061 9464
ENTRYPOINT ["/opt/expertmesh/bin/expert-svc"]
