/**
 * The pipeline worker image, assembled locally (nothing is pulled): busybox for /bin/sh, the host's node binary and
 * the shared libraries it links, and pipeline/worker.ts bundled by esbuild into /app/worker.js, imported with
 * `docker import`. Tagged by a hash of its content, so it is rebuilt only when the worker code (or node) changes.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { build } from 'esbuild';
import { projectScript } from '../workers/project';

const run = promisify(execFile);

/** Repository of the image: tags are content hashes, plus `latest` for the most recent build. */
export const PIPELINE_IMAGE_REPO = 'selfheal-pipeline';
/** Bump when the rootfs layout changes, so existing images are not reused. */
const LAYOUT_VERSION = '1';

export interface PipelineImageOptions {
  /** Node binary copied into the image. Default the one running this code. */
  node?: string;
  /** Static busybox providing /bin/sh. Default /bin/busybox (Debian busybox-static). */
  busybox?: string;
  /** Rebuild even when the tag exists. */
  force?: boolean;
}

export interface PipelineImage {
  /** `selfheal-pipeline:<hash>`: pass it to the runner. */
  image: string;
  id: string;
  /** False when an image with this content already existed. */
  built: boolean;
  /** Milliseconds spent (bundling, and building when `built`). */
  ms: number;
}

export class PipelineImageError extends Error {
  readonly type = 'pipeline_image_failed';
}

/**
 * The pipeline worker and everything it imports, as one CommonJS file for node 20: from the compiled
 * `pipeline/worker.js` when this code runs compiled, from `pipeline/worker.ts` when it runs from sources.
 */
export async function bundleWorker(): Promise<string> {
  const entry = projectScript('pipeline/worker');
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    write: false,
    // pg's optional native binding is never used.
    external: ['pg-native'],
    legalComments: 'none',
    logLevel: 'silent',
  });
  const out = result.outputFiles[0];
  if (!out) throw new PipelineImageError(`esbuild produced no output for ${entry}`);
  return out.text;
}

/** Absolute paths of the shared libraries (and loader) a binary needs, from `ldd`. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await run('ldd', [binary]);
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (m?.[1]) libs.add(m[1]);
  }
  return [...libs];
}

async function exists(docker: Docker, image: string): Promise<string | undefined> {
  try {
    const info = await docker.getImage(image).inspect();
    return info.Id;
  } catch {
    return undefined;
  }
}

const inFlight = new Map<string, Promise<PipelineImage>>();

/**
 * Returns the image for the current worker code, building it when missing. Concurrent calls in one process share
 * one build; concurrent builds in several processes produce the same tag, harmlessly.
 */
export async function ensurePipelineImage(docker: Docker, opts: PipelineImageOptions = {}): Promise<PipelineImage> {
  const t0 = Date.now();
  const node = opts.node ?? process.execPath;
  const busybox = opts.busybox ?? '/bin/busybox';
  const bundle = await bundleWorker();
  const hash = createHash('sha256')
    .update(`${LAYOUT_VERSION}\0${process.version}\0${process.arch}\0${node}\0`)
    .update(bundle)
    .digest('hex')
    .slice(0, 16);
  const image = `${PIPELINE_IMAGE_REPO}:${hash}`;
  if (!opts.force) {
    const id = await exists(docker, image);
    if (id) return { image, id, built: false, ms: Date.now() - t0 };
  }
  let pending = inFlight.get(image);
  if (!pending) {
    pending = buildImage(docker, { image, hash, bundle, node, busybox }).finally(() => inFlight.delete(image));
    inFlight.set(image, pending);
  }
  const built = await pending;
  return { ...built, ms: Date.now() - t0 };
}

async function buildImage(
  docker: Docker,
  b: { image: string; hash: string; bundle: string; node: string; busybox: string },
): Promise<PipelineImage> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'selfheal-pipeline-image-'));
  try {
    const root = path.join(dir, 'rootfs');
    const put = async (from: string, to: string) => {
      const dest = path.join(root, to);
      await mkdir(path.dirname(dest), { recursive: true });
      await copyFile(from, dest); // follows symlinks: the library's content lands at the path ldd names
    };
    try {
      await put(b.busybox, '/bin/busybox');
    } catch (err) {
      throw new PipelineImageError(
        `cannot read ${b.busybox} (install busybox-static: scripts/dev.sh setup): ${(err as Error).message}`,
      );
    }
    await symlink('busybox', path.join(root, 'bin', 'sh'));
    await put(b.node, '/usr/bin/node');
    for (const lib of await sharedLibraries(b.node)) await put(lib, lib);
    await mkdir(path.join(root, 'app'), { recursive: true });
    await writeFile(path.join(root, 'app', 'worker.js'), b.bundle);
    await mkdir(path.join(root, 'tmp'), { recursive: true });
    await chmod(path.join(root, 'tmp'), 0o1777);
    await mkdir(path.join(root, 'etc'), { recursive: true });
    await writeFile(
      path.join(root, 'etc', 'passwd'),
      'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n',
    );
    await writeFile(path.join(root, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');

    const tar = path.join(dir, 'rootfs.tar');
    await run('tar', ['-C', root, '--owner=0', '--group=0', '--numeric-owner', '-cf', tar, '.']);

    const stream = await docker.importImage(tar, {
      repo: PIPELINE_IMAGE_REPO,
      tag: b.hash,
      changes: [
        'ENTRYPOINT ["/usr/bin/node", "/app/worker.js"]',
        'WORKDIR /app',
        'ENV NODE_ENV=production',
        // Unprivileged: the worker needs no root, only the network.
        'USER 65534:65534',
      ],
    });
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null, output: { error?: string }[]) => {
        const failed = err?.message ?? output.find((o) => o.error)?.error;
        if (failed) reject(new PipelineImageError(`docker import failed: ${failed}`));
        else resolve();
      });
    });
    const id = await exists(docker, b.image);
    if (!id) throw new PipelineImageError(`docker import reported success but ${b.image} does not exist`);
    await docker.getImage(b.image).tag({ repo: PIPELINE_IMAGE_REPO, tag: 'latest' });
    return { image: b.image, id, built: true, ms: 0 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
