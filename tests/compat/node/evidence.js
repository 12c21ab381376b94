// Evidence's PostgreSQL connector (@evidence-dev/postgres runQuery), step for step, against dpsql:
// node evidence.js HOST PORT USER PASSWORD DATABASE → one JSON line. A pool connection runs the
// row-count query Evidence sends first, then the source query through a pg-cursor read in
// batches of 100000 until a batch comes back empty, then the pool ends.
const { Pool } = require('pg');
const Cursor = require('pg-cursor');

(async () => {
  const [host, port, user, password, database] = process.argv.slice(2);
  const pool = new Pool({ host, port: Number(port), user, password, database });
  const connection = await pool.connect();
  const q = 'SELECT department, COUNT(*) AS visits, AVG(cost) AS avg_cost FROM visits GROUP BY department';
  const length = await connection.query(`WITH root as (${q}) SELECT COUNT(*) as rows FROM root`);
  const cursor = connection.query(new Cursor(q));
  const batches = [];
  let rows;
  while ((rows = await cursor.read(100000)) && rows.length > 0) batches.push(rows.length);
  const fields = cursor._result.fields.map((f) => f.name);
  await cursor.close();
  connection.release();
  await pool.end();
  console.log(JSON.stringify({ expected: Number(length.rows[0].rows), batches, fields }));
})().catch((e) => { console.error(e); process.exit(1); });
