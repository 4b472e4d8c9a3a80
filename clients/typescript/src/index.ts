/**
 * TypeScript client for aios-grpc blocks.
 *
 * ```ts
 * import { BlockClient } from "@aios-grpc/client";
 * const block = new BlockClient("127.0.0.1:50051");
 * for await (const result of block.process([{ value: 0.9 }, { value: 0.1 }], { sessionId: "s1" })) {
 *   console.log(result.seqNo, result.ok, result.data);
 * }
 * block.close();
 * ```
 *
 * Values are plain JS values both ways: a packet's `data` is JSON-encoded by the
 * client and a result's `data` parsed; Structs (parameters, management data, info)
 * are JS objects.
 */

import { create, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import {
  BlockService,
  GetInfoResponseSchema,
  PacketSchema,
  ResultKind,
  type Packet,
  type PacketResult,
  type ProcessRequest,
  type ProcessResponse,
} from "./gen/aios/block/v1/block_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health_pb.js";

export { PacketSchema, type Packet } from "./gen/aios/block/v1/block_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** PEM text or bytes for TLS. */
export type Pem = string | Uint8Array;

/** TLS settings: `true` uses the system's CAs; `ca` verifies the server, `cert` + `key` for mutual TLS. */
export interface TlsOptions {
  ca?: Pem;
  cert?: Pem;
  key?: Pem;
  /** The name the server's certificate is checked against (default: the address' host). */
  serverName?: string;
}

export interface BlockClientOptions {
  /** Sent as `authorization: Bearer <token>` with every call. */
  token?: string;
  /** TLS (plaintext when absent or false). */
  tls?: boolean | TlsOptions;
  /** Extra metadata sent with every call. */
  headers?: Record<string, string>;
  /** Default deadline of each call in milliseconds (none when absent). */
  timeoutMs?: number;
}

/** Why a packet failed, as the server said. */
export interface PacketFailure {
  /** gRPC status code number (3 INVALID_ARGUMENT, 14 UNAVAILABLE, ...). */
  code: number;
  /** The code's name, e.g. "INVALID_ARGUMENT". */
  codeName: string;
  message: string;
  retryable: boolean;
  stage: string;
}

/** One result from a Process stream: terminal (`ok` / `error`) or `partial`. */
export interface Result {
  sessionId: string;
  seqNo: number;
  kind: "ok" | "error" | "partial" | "unspecified";
  /** Terminal success. */
  ok: boolean;
  /** True for `ok` and `error`: every packet gets exactly one. */
  terminal: boolean;
  /** The output's `data` parsed from JSON (undefined without an output). */
  data: JsonValue | undefined;
  /** The output packet itself (headers, files, output_ptr). */
  output?: Packet;
  error?: PacketFailure;
}

/** What `process` and `stream().send` take: a value (sent as the packet's JSON data) or a `Packet`. */
export type PacketLike = JsonValue | Packet;

export interface PacketFields {
  sessionId?: string;
  seqNo?: number | bigint;
  outputPtr?: string | JsonObject;
  headers?: Record<string, string>;
  files?: { metadata: string | JsonObject; data: Uint8Array }[];
  /** Unix time in seconds after which the server answers DEADLINE_EXCEEDED. */
  deadline?: number;
}

/** A `Packet` whose `data` is `data` as JSON text (`undefined` sends `{}`); `rawData` sends text as is. */
export function makePacket(data: JsonValue | undefined, fields: PacketFields & { rawData?: string } = {}): Packet {
  return create(PacketSchema, {
    sessionId: fields.sessionId ?? "",
    seqNo: BigInt(fields.seqNo ?? 0),
    data: fields.rawData ?? JSON.stringify(data === undefined ? {} : data),
    outputPtr:
      fields.outputPtr === undefined
        ? ""
        : typeof fields.outputPtr === "string"
          ? fields.outputPtr
          : JSON.stringify(fields.outputPtr),
    headers: fields.headers ?? {},
    files: (fields.files ?? []).map((f) => ({
      metadata: typeof f.metadata === "string" ? f.metadata : JSON.stringify(f.metadata),
      fileData: f.data,
    })),
    deadline: fields.deadline ?? 0,
  });
}

function isPacket(item: unknown): item is Packet {
  return typeof item === "object" && item !== null && (item as { $typeName?: string }).$typeName === "aios.block.v1.Packet";
}

function asPacket(item: PacketLike, sessionId: string, seqNo: number): Packet {
  return isPacket(item) ? item : makePacket(item, { sessionId, seqNo });
}

const KINDS: Record<number, Result["kind"]> = {
  [ResultKind.OK]: "ok",
  [ResultKind.ERROR]: "error",
  [ResultKind.PARTIAL]: "partial",
};

function codeName(code: number): string {
  const name = Code[code];
  if (name === undefined) return "UNKNOWN";
  // Code's member names are CamelCase ("InvalidArgument"); gRPC spells them INVALID_ARGUMENT.
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function resultOf(msg: PacketResult): Result {
  const kind = KINDS[msg.kind] ?? "unspecified";
  const output = msg.output;
  const fault = kind === "ok" ? undefined : msg.error;
  return {
    sessionId: msg.sessionId,
    seqNo: Number(msg.seqNo),
    kind,
    ok: kind === "ok",
    terminal: kind !== "partial",
    data: output && output.data ? (JSON.parse(output.data) as JsonValue) : undefined,
    output,
    error: fault && {
      code: fault.code,
      codeName: codeName(fault.code),
      message: fault.message,
      retryable: fault.retryable,
      stage: fault.stage,
    },
  };
}

function* resultsOf(response: ProcessResponse): Iterable<Result> {
  if (response.result) yield resultOf(response.result);
  for (const msg of response.results) yield resultOf(msg);
}

function checkObject(value: unknown, what: string): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const got = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
    throw new TypeError(`${what} must be a plain object (a JSON object), got ${got}`);
  }
  // A round trip through JSON: what the block will see (undefined dropped, Dates as text).
  return JSON.parse(JSON.stringify(value)) as JsonObject;
}

/** A queue that is an async iterable: `push` items, `end()`, iterate once. */
class Channel<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | undefined;
  private ended = false;

  push(item: T): void {
    if (this.ended) throw new Error("stream is closed for sending");
    const wake = this.waiting;
    if (wake) {
      this.waiting = undefined;
      wake({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  end(): void {
    this.ended = true;
    const wake = this.waiting;
    if (wake && this.items.length === 0) {
      this.waiting = undefined;
      wake({ value: undefined, done: true });
    }
  }

  get closed(): boolean {
    return this.ended;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      // The transport ends a request iterable early (the call failed, or was cancelled).
      return: () => {
        this.ended = true;
        this.items = [];
        return Promise.resolve({ value: undefined, done: true });
      },
      throw: (error?: unknown) => {
        this.ended = true;
        this.items = [];
        return Promise.reject(error);
      },
    };
  }
}

/** An open Process stream: `send` packets, iterate `results()`, then `close()`. */
export class ProcessStream {
  private readonly requests = new Channel<ProcessRequest>();
  private readonly abort = new AbortController();
  private readonly responses: AsyncIterable<ProcessResponse>;
  private seq: number;

  constructor(
    client: Client<typeof BlockService>,
    headers: Record<string, string>,
    timeoutMs: number | undefined,
    private readonly sessionId: string,
    firstSeqNo: number,
  ) {
    this.seq = firstSeqNo;
    this.responses = client.process(this.requests, { headers, timeoutMs, signal: this.abort.signal });
  }

  /** Send one packet (a `Packet`, or a value sent as JSON data with the stream's session and the next seq_no). */
  send(item: PacketLike): void {
    this.requests.push({ $typeName: "aios.block.v1.ProcessRequest", packet: asPacket(item, this.sessionId, this.seq++), packets: [] });
  }

  /** Half-close: results keep coming until every packet is answered. */
  close(): void {
    if (!this.requests.closed) this.requests.end();
  }

  /** Abandon the stream. */
  cancel(): void {
    this.close();
    this.abort.abort();
  }

  /** Results as they arrive, until the server ends the stream. */
  async *results(): AsyncIterable<Result> {
    for await (const response of this.responses) yield* resultsOf(response);
  }
}

export interface ProcessOptions {
  /** Session of the packets made from values (default "session"). */
  sessionId?: string;
  /** seq_no of the first packet made from a value; the next ones count up (default 1). */
  firstSeqNo?: number;
  timeoutMs?: number;
}

function baseUrl(address: string, secure: boolean): string {
  if (/^https?:\/\//.test(address)) return address;
  return `${secure ? "https" : "http"}://${address}`;
}

/** A client for one block instance at `address` (`host:port`). */
export class BlockClient {
  readonly address: string;
  private readonly sessions: Http2SessionManager;
  private readonly block: Client<typeof BlockService>;
  private readonly healthClient: Client<typeof Health>;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number | undefined;

  constructor(address: string, options: BlockClientOptions = {}) {
    if (typeof address !== "string" || address.trim() === "") {
      throw new TypeError("address must be a non-empty string such as 127.0.0.1:50051");
    }
    this.address = address;
    const tls = options.tls === true ? {} : options.tls || undefined;
    const url = baseUrl(address, tls !== undefined);
    const pem = (value: Pem | undefined) => (value === undefined || typeof value === "string" ? value : Buffer.from(value));
    const nodeOptions = tls && {
      ca: pem(tls.ca),
      cert: pem(tls.cert),
      key: pem(tls.key),
      servername: tls.serverName,
    };
    this.sessions = new Http2SessionManager(url, undefined, nodeOptions);
    const transport = createGrpcTransport({ baseUrl: url, sessionManager: this.sessions });
    this.block = createClient(BlockService, transport);
    this.healthClient = createClient(Health, transport);
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token !== undefined) {
      if (!options.token || /[\r\n]/.test(options.token)) throw new TypeError("token must be a non-empty string on one line");
      headers["authorization"] = `Bearer ${options.token}`;
    }
    this.headers = headers;
    this.timeoutMs = options.timeoutMs;
  }

  /** Send `packets` on one Process stream; yields every result as it comes (partials before their terminal one). */
  async *process(packets: Iterable<PacketLike> | AsyncIterable<PacketLike>, options: ProcessOptions = {}): AsyncIterable<Result> {
    const sessionId = options.sessionId ?? "session";
    let seq = options.firstSeqNo ?? 1;
    async function* requests(): AsyncIterable<ProcessRequest> {
      for await (const item of packets as AsyncIterable<PacketLike>) {
        yield { $typeName: "aios.block.v1.ProcessRequest", packet: asPacket(item, sessionId, seq++), packets: [] };
      }
    }
    const responses = this.block.process(requests(), { headers: this.headers, timeoutMs: options.timeoutMs ?? this.timeoutMs });
    for await (const response of responses) yield* resultsOf(response);
  }

  /** Process one input and return its terminal result (its partial results in `partials`). */
  async run(data: PacketLike, options: { sessionId?: string; seqNo?: number; timeoutMs?: number } = {}): Promise<Result & { partials: Result[] }> {
    const partials: Result[] = [];
    const stream = this.process([data], { sessionId: options.sessionId, firstSeqNo: options.seqNo, timeoutMs: options.timeoutMs });
    for await (const result of stream) {
      if (result.terminal) return { ...result, partials };
      partials.push(result);
    }
    throw new Error("stream ended without a terminal result");
  }

  /** An open Process stream to `send` packets on while reading `results()`. */
  stream(options: ProcessOptions = {}): ProcessStream {
    return new ProcessStream(this.block, this.headers, options.timeoutMs ?? this.timeoutMs, options.sessionId ?? "session", options.firstSeqNo ?? 1);
  }

  /** Apply parameters; resolves to `{ applied, parameters }`. */
  async setParameters(parameters: JsonObject): Promise<{ applied: JsonObject; parameters: JsonObject }> {
    const response = await this.block.setParameters(
      { parameters: checkObject(parameters, "parameters") },
      { headers: this.headers, timeoutMs: this.timeoutMs },
    );
    return { applied: response.applied ?? {}, parameters: response.parameters ?? {} };
  }

  /** Run a management action; resolves to what the block returned. */
  async management(action: string, data: JsonObject = {}): Promise<JsonValue> {
    const response = await this.block.management(
      { action, data: checkObject(data, "data") },
      { headers: this.headers, timeoutMs: this.timeoutMs },
    );
    return response.result === undefined ? null : toJson(ValueSchema, response.result);
  }

  /** Block id, instance id, SDK version, muxer and batcher settings, parameters (camelCase keys). */
  async getInfo(): Promise<JsonObject> {
    const response = await this.block.getInfo({}, { headers: this.headers, timeoutMs: this.timeoutMs });
    return toJson(GetInfoResponseSchema, response) as JsonObject;
  }

  /** The health status name ("SERVING", "NOT_SERVING", ...); `service` "" is the whole server. */
  async health(service = ""): Promise<string> {
    const response = await this.healthClient.check({ service }, { headers: this.headers, timeoutMs: this.timeoutMs ?? 5000 });
    return HealthCheckResponse_ServingStatus[response.status] ?? "UNKNOWN";
  }

  /** Close the HTTP/2 connection. */
  close(): void {
    this.sessions.abort();
  }
}

/** True when `error` is a gRPC error with `code` (e.g. `Code.InvalidArgument`). */
export function isCode(error: unknown, code: Code): boolean {
  return error instanceof ConnectError && error.code === code;
}
