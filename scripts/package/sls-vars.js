'use strict';

// Values serverless.yml cannot compute itself (neither YAML nor CloudFormation has
// arithmetic). Used as ${file(./scripts/package/sls-vars.js):<name>}; runs offline.

const LAMBDA_MAX_TIMEOUT = 900;
const SQS_MAX_VISIBILITY_TIMEOUT = 43200;

module.exports = {
  // AWS guidance for SQS event sources: visibility timeout >= 6 x the function timeout,
  // so a message is not redelivered while an invocation (plus its retries) still runs.
  async studyQueueVisibilityTimeout({ resolveVariable }) {
    const raw = await resolveVariable('param:timeout');
    const timeout = Number(raw);
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > LAMBDA_MAX_TIMEOUT) {
      throw new Error(`param "timeout" must be an integer 1..${LAMBDA_MAX_TIMEOUT}, got ${raw}`);
    }
    return Math.min(6 * timeout, SQS_MAX_VISIBILITY_TIMEOUT);
  },
};
