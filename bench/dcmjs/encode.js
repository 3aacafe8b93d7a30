#!/usr/bin/env node
'use strict';

/*
 * Benchmark harness for the OLD re-encoding path: dcmjs-codecs (OpenJPEG
 * compiled to WebAssembly) transcoding DICOM part-10 files to JPEG 2000, the
 * way the retired Node.js Lambda did it:
 *
 *   read file into memory -> parse (dcmjs, via Transcoder) -> transcode pixel
 *   data to JPEG 2000 -> serialise a new part-10 file into memory.
 *
 * Nothing is written to disk unless --dump-dir is given (and the dump writes
 * are excluded from `seconds`).
 *
 * Usage:
 *   node bench/dcmjs/encode.js --rate 100 [--lossless] [--repeat N]
 *                              [--dump-dir DIR] [--dcmjs-log] FILE_LIST.txt
 *
 * FILE_LIST.txt: one absolute path of a DICOM file per line (blank lines and
 * lines starting with '#' are ignored).
 *
 * Prints exactly one JSON object on stdout; diagnostics go to stderr.
 *
 * ---------------------------------------------------------------------------
 * How dcmjs-codecs defines `rate` (checked against the 0.0.8 JS bundle and the
 * project's wasm/src/Encoders.cpp + EncoderParameters.h):
 *
 *   - JS: NativeCodecs._createEncoderParameters() calls
 *       wasmSetRate(params, opts.rate ?? 20)
 *     The C++ field is `size_t Rate`, so a non-integer rate is TRUNCATED
 *     (12.5 -> 12). This script therefore rejects non-integer --rate values.
 *   - C++ EncodeJpeg2000():
 *       parameters.tcp_rates[0] =
 *           (float)(Rate * BitsStored / BitsAllocated);   // integer maths!
 *       if (!lossy) tcp_rates[numlayers++] = 0;           // + lossless layer
 *       parameters.cp_disto_alloc = 1;
 *     OpenJPEG's tcp_rates are relative to w*h*prec/8 with prec = BitsStored,
 *     so dcmjs-codecs ALREADY applies the "rate x BitsStored / BitsAllocated"
 *     mapping internally: the `rate` you pass means "compressed ~= 1/rate of
 *     the ALLOCATED (BitsAllocated) pixel data size", which is exactly the
 *     meaning of our --rate. Hence we pass --rate through UNCHANGED; applying
 *     the mapping again here would double it (12-bit CT at rate 100 would get
 *     OpenJPEG rate 56 instead of 75, i.e. ~1/75 instead of ~1/100).
 *     Caveat: the product is computed in integer arithmetic, so e.g. rate 10
 *     with 12/16 bits gives 120/16 = 7 (not 7.5).
 *   - Lossless (1.2.840.10008.1.2.4.90): dcmjs-codecs still writes a first
 *     quality layer at the (mapped) rate and then a final lossless layer
 *     (rate 0); the result is lossless whatever --rate is. We pass --rate
 *     (default 20, the library default) in lossless mode too.
 * ---------------------------------------------------------------------------
 */

const fs = require('fs');
const path = require('path');

const TS_J2K_LOSSLESS = '1.2.840.10008.1.2.4.90';
const TS_J2K_LOSSY = '1.2.840.10008.1.2.4.91';

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    'usage: node encode.js --rate R [--lossless] [--repeat N] [--dump-dir DIR] [--dcmjs-log] FILE_LIST.txt\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { rate: undefined, lossless: false, repeat: 1, dumpDir: null, dcmjsLog: false, list: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--rate') opts.rate = Number(next());
    else if (a.startsWith('--rate=')) opts.rate = Number(a.slice(7));
    else if (a === '--lossless') opts.lossless = true;
    else if (a === '--dcmjs-log') opts.dcmjsLog = true;
    else if (a === '--repeat') opts.repeat = Number(next());
    else if (a.startsWith('--repeat=')) opts.repeat = Number(a.slice(9));
    else if (a === '--dump-dir') opts.dumpDir = next();
    else if (a.startsWith('--dump-dir=')) opts.dumpDir = a.slice(11);
    else if (a === '-h' || a === '--help') usage();
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (opts.list === null) opts.list = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.list) usage('FILE_LIST.txt is required');
  if (opts.rate === undefined) {
    if (!opts.lossless) usage('--rate is required for lossy encoding');
    opts.rate = 20; // dcmjs-codecs default; only shapes the first layer in lossless mode
  }
  if (!Number.isFinite(opts.rate) || opts.rate <= 0) usage('--rate must be a positive number');
  if (!Number.isInteger(opts.rate)) {
    usage(`--rate ${opts.rate}: dcmjs-codecs stores rate as size_t and would truncate it; use an integer`);
  }
  if (!Number.isInteger(opts.repeat) || opts.repeat < 1) usage('--repeat must be an integer >= 1');
  return opts;
}

// Version of an installed package, read from its package.json on disk
// (dcmjs's "exports" map does not expose ./package.json to require()).
function pkgVersion(name) {
  let dir = path.dirname(require.resolve(name));
  for (;;) {
    const f = path.join(dir, 'package.json');
    if (fs.existsSync(f)) {
      const pj = JSON.parse(fs.readFileSync(f, 'utf8'));
      if (pj.name === name) return pj.version;
    }
    const up = path.dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}

const hr = () => process.hrtime.bigint();
const sec = (ns) => Number(ns) / 1e9;

function pixelDataBytes(pixelData) {
  if (pixelData === undefined || pixelData === null) return 0;
  const parts = Array.isArray(pixelData) ? pixelData : [pixelData];
  return parts.reduce((n, p) => n + (p && p.byteLength ? p.byteLength : 0), 0);
}

function uncompressedPixelBytes(el) {
  const frames = Number(el.NumberOfFrames || 1) || 1;
  return (
    Number(el.Rows) * Number(el.Columns) * Number(el.SamplesPerPixel || 1) *
    (Number(el.BitsAllocated) / 8) * frames
  );
}

function stats(msArr) {
  if (msArr.length === 0) return null;
  const s = [...msArr].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const r = (x) => Math.round(x * 1000) / 1000;
  return { mean: r(mean), median: r(q(0.5)), p95: r(q(0.95)), min: r(s[0]), max: r(s[s.length - 1]) };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const files = fs
    .readFileSync(opts.list, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (opts.dumpDir) fs.mkdirSync(opts.dumpDir, { recursive: true });

  const targetTs = opts.lossless ? TS_J2K_LOSSLESS : TS_J2K_LOSSY;
  const encodeParams = { rate: opts.rate }; // passed through unchanged, see header comment

  // ---- init (excluded from `seconds`) ----
  const t0 = hr();
  const dcmjsCodecs = require('dcmjs-codecs');
  const { NativeCodecs, Transcoder } = dcmjsCodecs;
  await NativeCodecs.initializeAsync({ logCodecsInfo: false, logCodecsTrace: false });
  // dcmjs logs a warning for every element it cannot name when serialising
  // (every private tag: "Unknown name in dataset ...", and drops them), tens of
  // lines per CT slice. dcmjs-codecs' Transcoder tries to silence this with
  // `dcmjs.log.level = "error"`, which is a no-op for loglevel, so the old
  // Lambda paid for that console output. By default we silence it properly so
  // `seconds` measures the codec path, not console I/O; --dcmjs-log keeps it.
  const dcmjsLog = require('dcmjs').log;
  if (!opts.dcmjsLog) dcmjsLog.setLevel('error');
  const initSeconds = sec(hr() - t0);

  const codecVersion = pkgVersion('dcmjs-codecs');
  const dcmjsVersion = pkgVersion('dcmjs');

  const failed = new Map(); // file -> error (deduplicated over repeats)
  let ok = 0;
  let bytesIn = 0;
  let bytesOut = 0;
  let pixIn = 0;
  let pixOut = 0;
  let pixUncompressed = 0;
  const perFileMs = [];
  const phase = { read: 0n, parse: 0n, transcode: 0n, serialise: 0n };
  const passSeconds = [];
  let dumpNs = 0n;
  let dumped = 0;

  const loopStart = hr();
  for (let pass = 0; pass < opts.repeat; pass++) {
    const passStart = hr();
    let passDumpNs = 0n;
    for (let idx = 0; idx < files.length; idx++) {
      const file = files[idx];
      const first = pass === 0;
      const a = hr();
      let b = a, c = a, d = a, e = a;
      try {
        const buf = fs.readFileSync(file);
        // dcmjs wants an ArrayBuffer of exactly the file's bytes
        const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
        b = hr();
        const tr = new Transcoder(ab);
        const el = tr.getElements();
        const srcTs = tr.getTransferSyntaxUid();
        if (el.PixelData === undefined) throw new Error('no PixelData element');
        const inPix = pixelDataBytes(el.PixelData);
        const inPixUnc = uncompressedPixelBytes(el);
        if (srcTs === targetTs) {
          // Transcoder.transcode() silently returns when source == target TS
          throw new Error(`already in target transfer syntax ${srcTs}; transcode() would be a no-op`);
        }
        c = hr();
        tr.transcode(targetTs, { ...encodeParams });
        d = hr();
        const out = tr.getDicomPart10();
        e = hr();
        if (tr.getTransferSyntaxUid() !== targetTs) {
          throw new Error(`transfer syntax after transcode is ${tr.getTransferSyntaxUid()}`);
        }
        const outPix = pixelDataBytes(tr.getElements().PixelData);
        if (first) {
          ok++;
          bytesIn += buf.byteLength;
          bytesOut += out.byteLength;
          pixIn += inPix;
          pixUncompressed += inPixUnc;
          pixOut += outPix;
        }
        perFileMs.push(Number(e - a) / 1e6);
        phase.read += b - a;
        phase.parse += c - b;
        phase.transcode += d - c;
        phase.serialise += e - d;
        if (first && opts.dumpDir) {
          const w0 = hr();
          const base = path.basename(file);
          const name = `${String(idx).padStart(4, '0')}_${base}${/\.dcm$/i.test(base) ? '' : '.dcm'}`;
          fs.writeFileSync(path.join(opts.dumpDir, name), Buffer.from(out));
          dumped++;
          passDumpNs += hr() - w0;
        }
      } catch (err) {
        if (!failed.has(file)) {
          failed.set(file, String((err && err.message) || err));
        }
      }
    }
    dumpNs += passDumpNs;
    passSeconds.push(sec(hr() - passStart - passDumpNs));
  }
  const loopSeconds = sec(hr() - loopStart - dumpNs);

  // a file that failed in a later pass only must not also count as ok
  const okFinal = Math.min(ok, files.length - failed.size);

  const ru = process.resourceUsage(); // maxRSS in kilobytes
  const mem = process.memoryUsage();
  const nDone = perFileMs.length;
  const result = {
    files: files.length,
    ok: okFinal,
    failed: [...failed].map(([file, error]) => ({ file, error })),
    seconds: loopSeconds,
    bytes_in: bytesIn,
    bytes_out: bytesOut,
    pixel_bytes_in: pixIn,
    pixel_bytes_out: pixOut,
    peak_rss_mb: Math.round((ru.maxRSS / 1024) * 10) / 10,
    codec: `dcmjs-codecs@${codecVersion}`,
    node: process.version,
    // ---- extras ----
    init_seconds: initSeconds,
    repeat: opts.repeat,
    mode: opts.lossless ? 'lossless' : 'lossy',
    dcmjs_log: opts.dcmjsLog,
    transfer_syntax: targetTs,
    rate_arg: opts.rate,
    rate_passed_to_codec: encodeParams.rate,
    dcmjs: `dcmjs@${dcmjsVersion}`,
    pixel_bytes_uncompressed: pixUncompressed,
    pixel_ratio: pixOut ? Math.round((pixUncompressed / pixOut) * 100) / 100 : null,
    ms_per_file: nDone ? (loopSeconds * 1000) / nDone : null,
    per_file_ms: stats(perFileMs),
    phase_seconds: {
      read: sec(phase.read),
      parse: sec(phase.parse),
      transcode: sec(phase.transcode),
      serialise: sec(phase.serialise),
    },
    pass_seconds: passSeconds,
    rss_now_mb: Math.round((mem.rss / 1048576) * 10) / 10,
    dumped: opts.dumpDir ? dumped : undefined,
    dump_dir: opts.dumpDir || undefined,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`fatal: ${(err && err.stack) || err}\n`);
  process.exit(1);
});
