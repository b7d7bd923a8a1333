// The oidc-provider peer for bench/idp.sh: one confidential client "bench" with the
// client_credentials grant (client_secret_basic), ES256-signed JWT access tokens (RFC 9068) for
// the resource urn:palisade:orders (audience "orders", scope "orders:read"), introspection on.
//
// oidc-provider refuses to introspect structured (JWT) tokens ("unsupported_token_type"), so a
// second resource, urn:palisade:orders-opaque, issues opaque tokens (stored in the adapter) for
// the introspection benchmark.
//
// Env: PORT (required), CLIENT_SECRET (required), WORKERS (default 1; >1 runs node:cluster with
// that many workers sharing the port, the signing key and the token store).
// Prints "listening <issuer> workers=<n>" on stdout when every worker accepts connections.
import cluster from 'node:cluster';
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const PORT = Number(process.env.PORT);
const SECRET = process.env.CLIENT_SECRET;
const WORKERS = Number(process.env.WORKERS || 1);
if (!PORT || !SECRET) {
  console.error('PORT and CLIENT_SECRET are required');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCE_JWT = 'urn:palisade:orders';
const RESOURCE_OPAQUE = 'urn:palisade:orders-opaque';

function newSigningJwk() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' };
}

if (WORKERS > 1 && cluster.isPrimary) {
  // One key for every worker, so any worker's tokens verify with the published JWKS.
  const env = { JWK: JSON.stringify(newSigningJwk()) };
  let ready = 0;
  const workers = [];
  for (let i = 0; i < WORKERS; i += 1) {
    const w = cluster.fork(env);
    workers.push(w);
    // The in-memory stores are replicated: a write in one worker is relayed to the others, so an
    // opaque token issued by one worker introspects on any of them (what a shared store such as
    // Redis would give, minus its network round trip on every read).
    w.on('message', (m) => {
      if (m?.replicate) for (const o of workers) if (o !== w && o.isConnected()) o.send(m);
    });
    w.on('listening', () => {
      ready += 1;
      if (ready === WORKERS) console.log(`listening ${ISSUER} workers=${WORKERS}`);
    });
  }
  cluster.on('exit', (w, code, signal) => {
    console.error(`worker ${w.process.pid} exited (${signal ?? code})`);
    process.exit(1);
  });
  const stop = () => { for (const w of workers) w.kill(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const jwk = process.env.JWK ? JSON.parse(process.env.JWK) : newSigningJwk();

  // oidc-provider's own in-memory adapter, wrapped so that writes are relayed to the other cluster
  // workers (a no-op in a single process). Reads stay local.
  const memory = createMemoryAdapter();
  const locals = new Map();
  const local = (model) => {
    if (!locals.has(model)) locals.set(model, memory(model));
    return locals.get(model);
  };
  const replicate = (op, model, args) => {
    if (process.send) process.send({ replicate: true, op, model, args });
  };
  process.on('message', (m) => {
    if (m?.replicate) local(m.model)[m.op](...m.args);
  });
  class ReplicatedMemoryAdapter {
    constructor(model) { this.model = model; this.local = local(model); }
    find(id) { return this.local.find(id); }
    findByUid(uid) { return this.local.findByUid(uid); }
    findByUserCode(code) { return this.local.findByUserCode(code); }
    async upsert(id, payload, expiresIn) {
      await this.local.upsert(id, payload, expiresIn);
      replicate('upsert', this.model, [id, payload, expiresIn]);
    }
    async destroy(id) { await this.local.destroy(id); replicate('destroy', this.model, [id]); }
    async consume(id) { await this.local.consume(id); replicate('consume', this.model, [id]); }
    async revokeByGrantId(g) { await this.local.revokeByGrantId(g); replicate('revokeByGrantId', this.model, [g]); }
  }

  const resourceServers = {
    [RESOURCE_JWT]: {
      scope: 'orders:read',
      audience: 'orders',
      accessTokenTTL: 600,
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: 'ES256' } },
    },
    [RESOURCE_OPAQUE]: {
      scope: 'orders:read',
      audience: 'orders',
      accessTokenTTL: 600,
      accessTokenFormat: 'opaque',
    },
  };

  const provider = new Provider(ISSUER, {
    adapter: ReplicatedMemoryAdapter,
    clients: [{
      client_id: 'bench',
      client_secret: SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'orders:read',
      id_token_signed_response_alg: 'ES256', // the only key is ES256 (the default is RS256)
    }],
    jwks: { keys: [jwk] },
    scopes: ['orders:read'],
    ttl: { ClientCredentials: 600 }, // Palisade's default access-token lifetime (10m)
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Any confidential client may introspect (what Palisade does for access tokens).
        allowedPolicy: async (ctx, client) => client.clientAuthMethod !== 'none',
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE_JWT,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          const info = resourceServers[resource];
          if (!info) throw new Provider.errors.InvalidTarget();
          return info;
        },
      },
    },
    clientBasedCORS: () => false,
    cookies: { keys: [randomUUID()] },
  });
  provider.listen(PORT, '127.0.0.1', () => {
    if (!process.send) console.log(`listening ${ISSUER} workers=1`);
  });
}
