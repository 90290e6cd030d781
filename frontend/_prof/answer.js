// A /health answer (docs/http_api.md) of `layers` x `heads` over `count` steps, every field filled.
export function healthAnswer(layers, heads, count) {
  const steps = Array.from({length: count}, (_, i) => i * 100);
  const roles = ["induction", "previous-token", "diagonal", "first-token", "diffuse", "none"];
  const measures = ["entropy", "entropy_nats", "max_logit", "previous_token", "diagonal", "first_token",
                    "induction", "monotonicity"];
  const body = {layers: [], heads: {}, steps, series: {}, roles: {}, groups: {}, alarms: [], emergence: [], changes: []};
  for (let l = 0; l < layers; l++) {
    const tag = "model/layer_" + String(l).padStart(2, "0");
    body.layers.push(tag);
    body.heads[tag] = heads;
    body.series[tag] = {};
    for (const [m, name] of measures.entries()) {
      body.series[tag][name] = steps.map((_, i) => Array.from({length: heads}, (_, h) =>
        name === "max_logit" ? 5 + i * (h + 1) * 0.2 : 0.5 + 0.45 * Math.sin(i / 9 + h + l + m)));
    }
    body.roles[tag] = steps.map((_, i) => Array.from({length: heads}, (_, h) => roles[(h + l + (i > 50 ? 1 : 0)) % roles.length]));
    body.groups[tag] = steps.map((_, i) => [[0, 1 + (i % 3)], [4, 5, 6], ...Array.from({length: heads - 5}, (_, k) => [k + 7])]);
    for (let h = 0; h < heads; h++) {
      const step = steps[(h * 7 + l * 3) % count];
      body.alarms.push({tag, head: h, step, kind: h % 2 ? "entropy_collapse" : "logit_growth", value: 0.01,
                        message: tag + " head " + h + ": alarm at step " + step});
      body.emergence.push({tag, head: h, role: roles[h % 4], step: steps[(h * 5 + l) % count],
                           message: tag + " head " + h + " became a " + roles[h % 4] + " head"});
    }
  }
  body.changes = body.emergence.slice(0, 40).map((e) => e.message);
  return body;
}
