// The layers of src/ (docs/architecture.md, "Layers"), checked by `npm run lint` (dependency-cruiser)
// and by test/layers.test.ts. A module may import its own folder, and any folder of a lower layer;
// never a higher one, and no import may close a cycle (type-only imports count).
//
//   0  stun/                                  the STUN protocol: bytes in, views out
//   1  defs/                                  reasons, the counter table, every interface between
//                                             the data path and the outside, errors
//   2  session/                               session state: registry, sessions, flow events, ports
//   3  admission/  backends/                  what a first check may cost; the backend table
//   4  datapath/   peers/                     forwarder, router, probe, the front door; the replica
//                                             hand-off (talks to the forwarder only through defs/)
//   5  io/ fastpath/ discovery/ admin/ workers/   adapters around the data path
//   6  config.ts  log.ts  runtime.ts          the pod's inputs: parsed flags, the logger, the
//                                             runtime guard (top-level files the pod reads)
//   7  pod/                                   composition: what a pod and a data-path thread do
//   8  bin.ts  cli.ts  jvb-config.ts          entry points
//
// Siblings within a layer import each other only where listed here, one way:
//   admission/ -> backends/   (a prefix token names its backend; the table never asks admission)
//   workers/   -> admin/      (type-only: the metric sources the pool hands the pod)
//   bin.ts -> cli.ts -> jvb-config.ts   (the executable loads the CLI, which runs the sub-commands)
// datapath/ and peers/ never import each other; nor do io/, fastpath/, discovery/ and admin/.

const LAYERS = [
  ['stun'],
  ['defs'],
  ['session'],
  ['admission', 'backends'],
  ['datapath', 'peers'],
  ['io', 'fastpath', 'discovery', 'admin', 'workers'],
  ['config.ts', 'log.ts', 'runtime.ts'],
  ['pod'],
  ['bin.ts', 'cli.ts', 'jvb-config.ts'],
];
const ALLOWED_SIBLINGS = [
  ['admission', 'backends'],
  ['workers', 'admin'],
  ['bin.ts', 'cli.ts'],
  ['cli.ts', 'jvb-config.ts'],
];

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** A path pattern for a folder (`name/…`) or a top-level file (`name.ts`) of src/. */
const unit = (name) => (name.endsWith('.ts') ? `^src/${esc(name)}$` : `^src/${esc(name)}/`);
const any = (names) => names.map(unit).join('|');

const upward = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${i}-up`,
  comment: `${layer.join(', ')} must not import a higher layer (${LAYERS.slice(i + 1)
    .flat()
    .join(', ')})`,
  severity: 'error',
  from: { path: any(layer) },
  to: { path: any(LAYERS.slice(i + 1).flat()) },
}));

const siblings = LAYERS.flatMap((layer) =>
  layer.flatMap((a) =>
    layer
      .filter((b) => b !== a && !ALLOWED_SIBLINGS.some(([x, y]) => x === a && y === b))
      .map((b) => ({
        name: `sibling-${a}-${b}`,
        comment: `${a} must not import ${b} (same layer; see the list of allowed siblings)`,
        severity: 'error',
        from: { path: unit(a) },
        to: { path: unit(b) },
      })),
  ),
);

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'an import cycle ties modules into one; break it with an interface in defs/',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...upward,
    ...siblings,
  ],
  options: {
    // TypeScript 7's compiler has no JavaScript API for dependency-cruiser to use: swc parses.
    parser: 'swc',
    // Type-only imports are dependencies too (a layer must not even name a higher one's types):
    // the swc parser keeps them as `type-only` dependencies (test/layers.test.ts proves it). The
    // `tsPreCompilationDeps` switch would ask for the TypeScript compiler API, which 7.0 lacks.
    tsPreCompilationDeps: false,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
  },
};
