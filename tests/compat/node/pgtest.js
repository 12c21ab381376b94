// node-postgres against dpsql: node pgtest.js HOST PORT USER PASSWORD DATABASE → one JSON line.
const { Client } = require('pg');

(async () => {
  const [host, port, user, password, database] = process.argv.slice(2);
  const c = new Client({ host, port: Number(port), user, password, database });
  const notices = [];
  c.on('notice', (n) => notices.push(n.message));
  await c.connect();
  const r = await c.query('SELECT department, COUNT(*) AS n FROM visits WHERE age > $1 GROUP BY department', [30]);
  const r2 = await c.query('SELECT name FROM departments WHERE department_id = $1', [3]);
  const r3 = await c.query('SELECT 1 AS one');
  let err = null;
  try { await c.query('SELECT * FROM visits'); } catch (e) { err = e.code; }
  const r4 = await c.query({ text: 'SELECT COUNT(*) AS n FROM visits WHERE sex = $1', values: ['F'], name: 'by-sex' });
  await c.query({ name: 'by-sex', values: ['M'] });
  console.log(JSON.stringify({ rows: r.rows.length, name: r2.rows[0].name, one: r3.rows[0].one, err,
                               named: typeof r4.rows[0].n, notices: notices.length }));
  await c.end();
})().catch((e) => { console.error(e); process.exit(1); });
