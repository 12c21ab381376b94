-- DBeaver 25.1 startup and navigator queries (datafusion-postgres issue #135 and tests/dbeaver.rs; buenavista#29/#42; dbeaver#35810)

-- @@ current schema and user
SELECT current_schema(),session_user

-- @@ namespaces
SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname

-- @@ type 1034 (pgjdbc)
SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1034

-- @@ type 1034 is_array
SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid   FROM pg_catalog.pg_type   LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r           from pg_namespace as ns           join ( select s.r, (current_schemas(false))[s.r] as nspname                    from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r          using ( nspname )        ) as sp     ON sp.nspoid = typnamespace  WHERE pg_type.oid = 1034  ORDER BY sp.r, pg_type.oid DESC

-- @@ database
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='dpdb'

-- @@ standard_conforming_strings
SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'

-- @@ search_path boot_val (26.2)
SELECT boot_val FROM pg_settings WHERE name='search_path'

-- @@ keywords
SELECT string_agg(word, ',' ) from pg_catalog.pg_get_keywords() where word <> ALL ('{a,abs,absolute,action,ada,add,admin,after,all,allocate,alter,always,and,any,are,array,as,asc,asensitive,assertion,assignment,asymmetric,at,atomic,attribute,attributes,authorization,avg,before,begin,bernoulli,between,bigint,binary,blob,boolean,both,breadth,by,c,call,called,cardinality,cascade,cascaded,case,cast,catalog,catalog_name,ceil,ceiling,chain,char,char_length,character,character_length,select,table,user,work,write,year,zone}'::text[])

-- @@ version
SELECT version()

-- @@ enum probe
SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1

-- @@ reltype probe
SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1

-- @@ data types
SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')

-- @@ tables of a schema
-- params: ["2200"]
SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  pg_catalog.pg_get_partkeydef(c.oid) as partition_key
    FROM pg_catalog.pg_class c
    LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass
    WHERE c.relnamespace=$1 AND c.relkind not in ('i','I','c')

-- @@ table sizes
-- params: ["2200"]
select c.oid,pg_catalog.pg_total_relation_size(c.oid) as total_rel_size,pg_catalog.pg_relation_size(c.oid) as rel_size
     FROM pg_class c
     WHERE c.relnamespace=$1

-- @@ table columns
-- params: ["{{oid:public.visits}}"]
SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description,dep.objid
FROM pg_catalog.pg_attribute a
INNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid)
LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum)
LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)
LEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid
WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=$1
ORDER BY a.attnum

-- @@ indexes
-- params: ["{{oid:public.visits}}"]
SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,c.reltablespace,tc.relname as tabrelname,dsc.description,pg_catalog.pg_get_expr(i.indpred, i.indrelid) as pred_expr,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr,pg_catalog.pg_relation_size(i.indexrelid) as index_rel_size,pg_catalog.pg_stat_get_numscans(i.indexrelid) as index_num_scans FROM pg_catalog.pg_index i
    INNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid
    INNER JOIN pg_catalog.pg_class tc ON tc.oid=i.indrelid
    LEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid
    WHERE  i.indrelid=$1 ORDER BY tabrelname, c.relname

-- @@ constraints
-- params: ["{{oid:public.visits}}"]
SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, case when c.contype='c' then "substring"(pg_get_constraintdef(c.oid), 7) else null end consrc_copy
    FROM pg_catalog.pg_constraint c
    INNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid
    LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid
    LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_constraint'::regclass
    WHERE c.conrelid=$1
    ORDER BY c.oid

-- @@ roles
SELECT a.oid,a.* FROM pg_catalog.pg_roles a ORDER BY a.oid

-- @@ access methods
SELECT am.oid,am.* FROM pg_catalog.pg_am am ORDER BY am.oid

-- @@ tablespaces
SELECT t.oid,t.*,pg_tablespace_location(t.oid) loc FROM pg_catalog.pg_tablespace t ORDER BY t.oid

-- @@ conversions
-- params: ["11"]
SELECT c.oid,c.*,d.description FROM pg_catalog.pg_conversion c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 WHERE c.connamespace=$1 ORDER BY c.oid

-- @@ operator classes
SELECT c.oid,c.* FROM pg_catalog.pg_opclass c ORDER BY c.oid

-- @@ operator families
SELECT f.oid,f.* FROM pg_catalog.pg_opfamily f ORDER BY f.oid

-- @@ extensions
SELECT e.oid,e.*,n.nspname FROM pg_catalog.pg_extension e, pg_catalog.pg_namespace n WHERE n.oid=e.extnamespace ORDER BY e.oid

-- @@ collations
SELECT c.oid,c.* FROM pg_catalog.pg_collation c ORDER BY c.oid
