// Shared parts of the interop server scripts: options, the client table, the request
// log served on a loopback-only stats port, and the ready line that tests wait for.
//
// A server script prints exactly one line to standard output once it listens:
//
//     stampede-interop ready {"token_url":...,"stats_url":...,"ca_file":...}
//
// and nothing else there. Errors go to standard error without secrets or tokens.
// SIGTERM and SIGINT close the servers and end the process.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export const readyPrefix = 'stampede-interop ready ';

// Requests kept in the log served by the stats port; older ones are dropped.
const maxLoggedRequests = 200;

// Reads `--name value` pairs. Every option named in `required` must be present.
export function parseOptions(argv, required) {
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!name.startsWith('--') || value === undefined) {
      fail(`usage: --clients FILE --state-dir DIR (got "${name}")`);
    }
    options[name.slice(2)] = value;
  }
  for (const name of required) {
    if (options[name] === undefined) {
      fail(`missing option --${name}`);
    }
  }
  return options;
}

// Reads the client table: a JSON array of objects with `client_id`, `client_secret` and
// optionally `scope` (allowed scopes), `token_lifetime` (seconds) and `omit_scope`.
export function readClients(file) {
  const clients = JSON.parse(readFileSync(file, 'utf8'));
  if (!Array.isArray(clients)) {
    fail(`${file} must contain a JSON array of clients`);
  }
  for (const client of clients) {
    if (typeof client.client_id !== 'string' || typeof client.client_secret !== 'string') {
      fail(`${file}: every client needs a string client_id and client_secret`);
    }
  }
  return clients;
}

// Writes a self-signed certificate for 127.0.0.1 and its key into `directory`.
export function makeCertificate(directory) {
  const certFile = path.resolve(directory, 'server-cert.pem');
  const keyFile = path.resolve(directory, 'server-key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { certFile, keyFile };
}

// Describes the client authentication a request carries, without any credential.
export function authenticationScheme(headers) {
  const value = headers.authorization;
  if (value === undefined) {
    return 'none';
  }
  return value.split(' ')[0].toLowerCase();
}

// The request log. Every request to the token server is counted, whatever its path or
// outcome, so that a test can assert how many requests the SDK sent.
export class RequestLog {
  constructor() {
    this.count = 0;
    this.entries = [];
  }

  // Counts a request and returns its entry, to be completed with `setParameters`.
  add(req) {
    this.count += 1;
    const entry = {
      method: req.method,
      path: new URL(req.url, 'http://127.0.0.1').pathname,
      authorization: authenticationScheme(req.headers),
      content_type: req.headers['content-type'] ?? '',
      parameters: null,
    };
    this.entries.push(entry);
    if (this.entries.length > maxLoggedRequests) {
      this.entries.shift();
    }
    return entry;
  }

  // Stores the decoded body parameters, with the client secret left out.
  static setParameters(entry, parameters) {
    const copy = {};
    for (const [name, value] of Object.entries(parameters ?? {})) {
      copy[name] = name === 'client_secret' ? '[not logged]' : value;
    }
    entry.parameters = copy;
  }

  toJSON() {
    return { requests: this.count, log: this.entries };
  }
}

// Serves `GET /stats` with the request log on 127.0.0.1, plain HTTP.
export function startStatsServer(log) {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/stats') {
      const body = JSON.stringify(log);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  return listenOnLoopback(server);
}

// Listens on a free port of 127.0.0.1 and resolves to the port.
export function listenOnLoopback(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

export function printReady(details) {
  process.stdout.write(readyPrefix + JSON.stringify(details) + '\n');
}

// Closes the servers on SIGTERM or SIGINT and exits.
export function closeOnSignal(servers) {
  const stop = () => {
    for (const server of servers) {
      server.closeAllConnections?.();
      server.close();
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export function fail(message) {
  process.stderr.write(`interop server: ${message}\n`);
  process.exit(2);
}
