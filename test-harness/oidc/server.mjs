// panva's oidc-provider (a certified OpenID Provider) on 127.0.0.1, as an independent peer for
// Portcullis end-to-end tests. Plain HTTP, in-memory storage, no interactive login.
//
//   node server.mjs [port]          (or PORT=<port>; 0 or nothing picks a free port)
//
// Prints exactly one line `READY <port>` on stdout once listening; everything else goes to stderr.
//
// What it offers (issuer `http://127.0.0.1:<port>`):
// * client `portcullis-test` / `portcullis-test-secret` (client_secret_basic or _post), grant
//   `client_credentials`;
// * client `gateway` / `gateway-secret` for introspection (RFC 7662) and revocation (RFC 7009);
//   it asks for signed introspection responses (RFC 9701), sent when the request carries
//   `Accept: application/token-introspection+jwt`;
// * resource indicators (RFC 8707): `resource=urn:portcullis:api` gives a JWT access token
//   (RFC 9068, `typ: at+jwt`, `aud: urn:portcullis:api`, scopes `orders:read orders:write`
//   allowed), signed with the current algorithm (RS256 by default; `OIDC_ALG=ES256` or
//   `POST /__admin/alg?alg=ES256` switches; PS256 and EdDSA also work). Without a resource the
//   token is opaque and introspectable;
// * admin endpoints on the same port:
//   - `GET  /__admin/health`                 → {ok, issuer, alg, kids, published}
//   - `POST /__admin/alg?alg=ES256`          → switches the access-token signing algorithm
//   - `POST /__admin/rotate[?keep_old=false]` → new signing keys (new kids) for every algorithm;
//     the previous keys stay published in the JWKS (for verification only) unless keep_old=false.
//     The key store of a Provider is fixed at construction, so this builds a new Provider and
//     swaps the HTTP handler; the in-memory token store is module-global and survives the swap.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const RESOURCE = 'urn:portcullis:api';
const RESOURCE_SCOPES = 'orders:read orders:write';
const ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'];

const portArg = process.argv[2] ?? process.env.PORT ?? '0';
const requestedPort = Number.parseInt(portArg, 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  console.error(`invalid port ${JSON.stringify(portArg)}`);
  process.exit(2);
}

let alg = process.env.OIDC_ALG || 'RS256';
if (!ALGS.includes(alg)) {
  console.error(`OIDC_ALG must be one of ${ALGS.join(', ')}, got ${alg}`);
  process.exit(2);
}

let generation = 0;

// One signing key per algorithm family, with kids unique per generation.
function freshKeys() {
  generation += 1;
  const tag = `g${generation}-${randomBytes(4).toString('hex')}`;
  const make = (type, options, jwkAlg, prefix) => {
    const { privateKey } = generateKeyPairSync(type, options);
    return { ...privateKey.export({ format: 'jwk' }), kid: `${prefix}-${tag}`, alg: jwkAlg, use: 'sig' };
  };
  return {
    RS256: make('rsa', { modulusLength: 2048 }, 'RS256', 'rs256'),
    PS256: make('rsa', { modulusLength: 2048 }, 'PS256', 'ps256'),
    ES256: make('ec', { namedCurve: 'P-256' }, 'ES256', 'es256'),
    EdDSA: make('ed25519', {}, 'EdDSA', 'eddsa'),
  };
}

let current = freshKeys(); // alg → private JWK used for signing
let retired = []; // older private JWKs still published (never used to sign)

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'portcullis-test',
        client_secret: 'portcullis-test-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: RESOURCE_SCOPES,
      },
      {
        client_id: 'gateway',
        client_secret: 'gateway-secret',
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        // RFC 9701: signed introspection responses when the caller asks for them.
        introspection_signed_response_alg: 'RS256',
      },
    ],
    // The current keys first: without an explicit kid oidc-provider signs with the first match.
    jwks: { keys: [...Object.values(current), ...retired] },
    scopes: ['openid', 'orders:read', 'orders:write'],
    // Fixed keys only so oidc-provider does not warn about generated ones; no cookie is used by
    // the client_credentials grant.
    cookies: { keys: ['portcullis-test-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Any authenticated confidential client may introspect (the default also allows this,
        // but warns on every call that the policy should be reviewed).
        allowedPolicy: async (ctx, client, token) =>
          client.clientAuthMethod !== 'none' || token.clientId === ctx.oidc.client.clientId,
      },
      jwtIntrospection: { enabled: true },
      revocation: {
        enabled: true,
        // The owner or the gateway may revoke.
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId || client.clientId === 'gateway',
      },
      resourceIndicators: {
        enabled: true,
        // Only an explicit `resource` parameter selects the resource server; without it the
        // client_credentials token is opaque.
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          if (resourceIndicator !== RESOURCE) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: RESOURCE_SCOPES,
            audience: RESOURCE,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg, kid: current[alg].kid } },
          };
        },
      },
    },
    ttl: { ClientCredentials: 600 },
  });
  provider.on('server_error', (ctx, err) => console.error(`oidc-provider server_error: ${err?.stack ?? err}`));
  return provider;
}

function publicJwk(jwk) {
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  return pub;
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function describe(issuer) {
  return {
    ok: true,
    issuer,
    alg,
    generation,
    kids: Object.fromEntries(Object.entries(current).map(([a, k]) => [a, k.kid])),
    published: [...Object.values(current), ...retired].map((k) => publicJwk(k).kid),
  };
}

function admin(req, res, url, state) {
  if (req.method === 'GET' && url.pathname === '/__admin/health') {
    return sendJson(res, 200, describe(state.issuer));
  }
  if (req.method === 'POST' && url.pathname === '/__admin/alg') {
    const want = url.searchParams.get('alg');
    if (!ALGS.includes(want)) {
      return sendJson(res, 400, { error: `alg must be one of ${ALGS.join(', ')}` });
    }
    alg = want;
    return sendJson(res, 200, describe(state.issuer));
  }
  if (req.method === 'POST' && url.pathname === '/__admin/rotate') {
    const keepOld = !['false', '0', 'no'].includes((url.searchParams.get('keep_old') ?? 'true').toLowerCase());
    const previous = Object.values(current);
    current = freshKeys();
    retired = keepOld ? [...previous, ...retired] : [];
    const provider = buildProvider(state.issuer);
    state.handler = provider.callback();
    return sendJson(res, 200, describe(state.issuer));
  }
  return sendJson(res, 404, { error: 'unknown admin endpoint' });
}

const state = { issuer: undefined, handler: undefined };

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', `http://${HOST}`);
  if (url.pathname.startsWith('/__admin/')) {
    try {
      admin(req, res, url, state);
    } catch (err) {
      console.error(`admin error: ${err?.stack ?? err}`);
      sendJson(res, 500, { error: String(err) });
    }
    return;
  }
  state.handler(req, res);
});

server.on('error', (err) => {
  console.error(`cannot listen on ${HOST}:${requestedPort}: ${err.message}`);
  process.exit(1);
});

server.listen(requestedPort, HOST, () => {
  const { port } = server.address();
  state.issuer = `http://${HOST}:${port}`;
  state.handler = buildProvider(state.issuer).callback();
  process.stdout.write(`READY ${port}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
// With OIDC_EXIT_ON_STDIN_EOF=1 (the Rust harness sets it and holds a pipe to stdin), exit when
// the parent goes away, even if it could not kill us.
if (process.env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
