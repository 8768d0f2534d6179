"""metrics.jsonl: events, and a last line cut short by a kill."""

import json

from dcgan import metric_writers


def test_a_line_cut_short_is_dropped_and_events_follow(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  whole = json.dumps({'step': 2, 'd_loss': 1.5}) + '\n'
  path.write_text(whole + '{"step": 4, "d_lo')  # killed mid-write
  writer = metric_writers.MetricWriter(tmp_path)
  writer.write_event(3, 'resumed', rollbacks=0)
  writer.write_scalars(4, {'d_loss': 1.25})
  writer.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 3, 4]
  assert records[1]['event'] == 'resumed' and records[1]['rollbacks'] == 0
  assert 'event' not in records[2] and records[2]['d_loss'] == 1.25


def test_a_file_without_a_newline_at_all_is_emptied(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "d_')
  metric_writers.MetricWriter(tmp_path).close()
  assert (tmp_path / 'metrics.jsonl').read_text() == ''
