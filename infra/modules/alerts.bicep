// Alert rules: dead-lettered and refused (-poison) messages, failed notifications, failed
// function runs; sent to an email action group when an address is given. docs/operations.md
// says what each one means and what to do.

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Region of the log alert rules (that of Application Insights).')
param location string

@description('Tags for the alert rules.')
param tags object = {}

@description('Email address alerts are sent to; empty: no action group (alerts show in the portal only).')
param alertEmail string = ''

@description('Resource id of the Service Bus namespace.')
param serviceBusNamespaceId string

@description('Names of the -poison queues.')
param poisonQueueNames array

@description('Resource id of the Application Insights component.')
param appInsightsId string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mlc-ops'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var metricActions = empty(alertEmail) ? [] : [
  {
    actionGroupId: actionGroup.id
  }
]
var logActions = {
  actionGroups: empty(alertEmail) ? [] : [
    actionGroup.id
  ]
}

// A message the host could not process maxDeliveryCount times (a handler kept crashing), or
// one that expired, sits in a queue's $DeadLetterQueue.
resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-dead-lettered-messages'
  location: 'global'
  tags: tags
  properties: {
    description: 'Service Bus dead-lettered messages above zero: the host gave up on a message (handler crashed on every delivery) or it expired.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadletteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: metricActions
  }
}

// Messages the app refused (unreadable, unknown type or version, permanent failure, out of
// attempts) are active messages in the -poison queues. A metric alert with the EntityName
// dimension, not a log query: platform metrics exported to Log Analytics (AzureMetrics) carry
// no dimensions, so a log query could not tell the -poison queues from the others.
resource poisonMessages 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-poison-messages'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages waiting in a -poison queue: the app refused work and recorded why. Read them, fix the cause, replay the jobs.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'PoisonActiveMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: poisonQueueNames
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: metricActions
  }
}

// A notification whose job ended failed (the audit step "failed": a permanent provider error,
// an invalid number, a record that could not be read), or that the provider reported failed or
// undelivered (audit step "status"). Every audit step is one log line whose custom dimensions
// (step, status, connection, channel, job_id, erp_record, correlation_id, reason) the app
// exports itself (shared/telemetry.py). The query is in the classic Application Insights schema
// (traces.customDimensions, the same data as AppTraces.Properties in the workspace), as the rule
// is scoped to the Application Insights resource.
resource failedNotifications 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-failed-notifications'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}: failed notifications'
    description: 'A notification job reached the audit step "failed", or the provider reported it failed or undelivered. The failures query shows which job, channel and reason.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where isnotempty(customDimensions.step) | extend step = tostring(customDimensions.step), status = tostring(customDimensions.status) | where step == "failed" or (step == "status" and status in ("failed", "undelivered")) | project timestamp, step, status, connection = tostring(customDimensions.connection), channel = tostring(customDimensions.channel), job_id = tostring(customDimensions.job_id), erp_record = tostring(customDimensions.erp_record), correlation_id = tostring(customDimensions.correlation_id), reason = tostring(customDimensions.reason)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logActions
  }
}

// A function run that failed (an unhandled exception: the host retries queue messages and
// finally dead-letters them) or an HTTP request answered as failed.
resource functionFailures 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-function-failures'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}: function failures'
    description: 'Failed function executions or exceptions. Open Application Insights > Failures for the stack and the operation.'
    severity: 3
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'union (requests | where success == false | project timestamp, operation_Name, what = strcat("request ", resultCode)), (exceptions | project timestamp, operation_Name, what = type)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logActions
  }
}

output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
