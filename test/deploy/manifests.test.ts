import { describe, expect, it } from 'vitest';
import {
  checkProxy,
  checkRbac,
  checkWorkersAgreeWithCpu,
  type Obj,
  rawObjects,
  schemaProblems,
} from './k8s.ts';

// The raw files of deploy/, without a renderer (npm test). What kustomize renders from them:
// render.test.ts (npm run test:deploy).

describe('deploy/ raw manifests', () => {
  for (const dir of ['base', 'overlays/jitsi', 'overlays/jitsi-helm', 'components/monitoring']) {
    it(`${dir}: every object passes the schemas`, async () => {
      // prometheus-operator kinds have no schema in kubernetes-models: test/monitoring checks them.
      const objs = rawObjects(dir).filter((o) => !o.apiVersion.startsWith('monitoring.coreos.com/'));
      expect(objs.length).toBeGreaterThan(0);
      const problems = (await Promise.all(objs.map(schemaProblems))).flat();
      expect(problems).toEqual([]);
    });
  }

  it('base: least-privilege RBAC and a hardened proxy', () => {
    const objs = rawObjects('base');
    checkRbac(objs, undefined);
    checkProxy(objs);
  });

  it('the schema checks can fail', async () => {
    const bad: Obj = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'bad' },
      spec: {
        replicas: 'two',
        selector: { matchLabels: { a: 'b' } },
        template: { spec: { containers: [{ name: 'c', securityContext: { readOnlyRootFS: true } }] } },
      },
    };
    expect(await schemaProblems(bad)).toEqual([
      'Deployment/bad: data/spec/replicas must be integer',
      'Deployment/bad: unknown field Deployment.spec.template.spec.containers[0].securityContext.readOnlyRootFS',
    ]);
    const role = { ...rawObjects('base').find((o) => o.kind === 'Role')! };
    role.rules = [
      {
        apiGroups: ['discovery.k8s.io'],
        resources: ['endpointslices'],
        verbs: ['get', 'list', 'watch', 'delete'],
      },
    ];
    expect(() => checkRbac([role], undefined)).toThrow();
  });

  it('the --workers/CPU check can fail', () => {
    checkWorkersAgreeWithCpu('auto', { requests: { cpu: '2' }, limits: { cpu: '2' } });
    checkWorkersAgreeWithCpu('2', { requests: { cpu: '2000m' } });
    expect(() => checkWorkersAgreeWithCpu('auto', { requests: { cpu: '2' } })).toThrow(/CPU limit/);
    expect(() =>
      checkWorkersAgreeWithCpu('auto', { requests: { cpu: '1500m' }, limits: { cpu: '1500m' } }),
    ).toThrow(/whole CPUs/);
    expect(() =>
      checkWorkersAgreeWithCpu('auto', { requests: { cpu: '1' }, limits: { cpu: '2' } }),
    ).toThrow();
    expect(() => checkWorkersAgreeWithCpu('4', { requests: { cpu: '2' } })).toThrow();
  });
});
