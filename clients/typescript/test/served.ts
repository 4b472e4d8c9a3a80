// A block served by `aios-grpc serve` in a child process, for the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/served.js -> the repository root.
export const ROOT = process.env.AIOS_REPO_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const PYTHON = process.env.AIOS_PYTHON ?? resolve(ROOT, ".venv/bin/python");

export interface Served {
  address: string;
  stop(): Promise<void>;
}

/** Serve `ref` (module:Class) on 127.0.0.1 port 0; resolves once it listens. */
export function serve(ref: string, env: Record<string, string> = {}): Promise<Served> {
  const child: ChildProcess = spawn(PYTHON, ["-m", "aios_grpc", "serve", ref], {
    cwd: ROOT,
    env: {
      ...process.env,
      AIOS_HOST: "127.0.0.1",
      AIOS_PORT: "0",
      AIOS_METRICS_PORT: "0",
      PYTHONUNBUFFERED: "1",
      PYTHONPATH: ROOT,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  return new Promise((resolveServed, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`server did not start in 60 s:\n${log}`));
    }, 60_000);
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      const match = /listening on [^ ]+:(\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolveServed({
          address: `127.0.0.1:${match[1]}`,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null) return done();
              child.once("exit", () => done());
              child.kill("SIGTERM");
            }),
        });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening:\n${log}`));
    });
  });
}
