# One image for every node of a GLINT-RU cluster: Ray (pinned), the CUDA build of torch, glintru.
# Used by cluster.yaml (its `docker:` block) and by the KubeRay manifests in k8s/.
#
#   docker build -t glintru:0.2.0 .
#   docker tag glintru:0.2.0 REGISTRY/glintru:0.2.0 && docker push REGISTRY/glintru:0.2.0
#
# The base image is Ray's own (user `ray`, conda Python 3.11, rsync and ssh for the cluster
# launcher), CUDA 12.8 runtime. CPU-only nodes run the same image: torch falls back to the CPU.
FROM rayproject/ray:2.60.0-py311-cu128

# torch first, from PyTorch's CUDA 12.8 index, so the project's install keeps that build.
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cu128

# boto3: the AWS autoscaler on the head node; the rest comes from pyproject.toml (Ray pinned there too).
WORKDIR /home/ray/glintru
COPY --chown=ray:users pyproject.toml README.md LICENSE ./
COPY --chown=ray:users glintru ./glintru
COPY --chown=ray:users search_spaces ./search_spaces
COPY --chown=ray:users pipelines ./pipelines
RUN pip install --no-cache-dir "boto3>=1.34,<2" . \
    && python -c "import glintru, ray, torch; print('glintru', glintru.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"

# Checks that the image is what the cluster expects (run by `docker run --rm IMAGE`).
CMD ["glintru", "train", "--smoke-test", "--quiet"]
